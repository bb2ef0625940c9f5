"""The masked optimizer and the sharded-tensor helpers on parameters split across two real gloo
processes (as FSDP splits them) against the same optimizer on whole tensors in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitviz.models import shards
from circuitviz.tuning.masks import RowMask
from circuitviz.tuning.optim import MaskedOptimizer
from tests.support.sharded_case import CONFIG, STEPS, case

pytestmark = pytest.mark.slow  # starts two Python processes that import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sharded") / "result.pt"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc-per-node", "2", str(ROOT / "tests/support/sharded_optimizer.py"), str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def whole() -> dict:
    """The oracle: the same steps on whole tensors in one process."""
    tensors, grads, keeps = case()
    params = {name: torch.nn.Parameter(value.clone()) for name, value in tensors.items()}
    masks = {name: RowMask(dim, keep) for name, (dim, keep) in keeps.items()}
    optimizer = MaskedOptimizer(params, CONFIG)
    norms = []
    for step in range(STEPS):
        for name, param in params.items():
            param.grad = grads[name][step].clone()
        norms.append(optimizer.clip_grad_norm(masks, 0.5))
        optimizer.step(masks, CONFIG.lr)
    return {"params": params, "state": optimizer.state_tensors()[0], "norms": norms}


def test_sharded_masked_steps_equal_whole_tensor_steps(sharded, whole):
    for name, param in whole["params"].items():
        torch.testing.assert_close(sharded["params"][name], param.detach())
    assert sharded["state"].keys() == whole["state"].keys()
    for key, value in whole["state"].items():
        torch.testing.assert_close(sharded["state"][key], value)
    assert sharded["norms"] == pytest.approx(whole["norms"], rel=1e-6)


def test_frozen_entries_stay_bit_identical_on_every_shard(sharded):
    tensors, _, keeps = case()
    for name, (dim, keep) in keeps.items():
        if keep.all():
            continue
        frozen = (~keep).nonzero()[:, 0]
        before = tensors[name].index_select(dim, frozen)
        after = sharded["params"][name].index_select(dim, frozen)
        assert torch.equal(before, after)
        moment = sharded["state"][f"optim/{name}/exp_avg"].index_select(dim, frozen)
        assert torch.equal(moment, torch.zeros_like(moment))
        trained = sharded["params"][name].index_select(dim, keep.nonzero()[:, 0])
        assert not torch.equal(trained, tensors[name].index_select(dim, keep.nonzero()[:, 0]))


def test_row_sums_assign_and_like_see_the_whole_tensor(sharded):
    for (name, dim), sums in sharded["row_sums"].items():
        param = sharded["params"][name].double()
        expected = (param**2).movedim(dim, 0).reshape(param.shape[dim], -1).sum(1)
        torch.testing.assert_close(sums, expected)
    weight = case()[0]["weight"]
    assert torch.equal(sharded["assigned"], weight * 3)
    assert torch.equal(sharded["like"], weight * 5)


def test_eap_on_a_sharded_model_equals_eap_on_the_whole_model(sharded):
    """The closed-form q/k/v path reads each projection weight while FSDP holds it whole; both it
    and the per-head copies give the unsharded model's scores."""
    from circuitviz.attribution import AttributionConfig
    from circuitviz.attribution.eap import batch_edge_scores
    from circuitviz.graph.topology import graph_for
    from circuitviz.models import load_model
    from circuitviz.tuning.discovery import hook_flags
    from tests.support.batches import random_batch

    model = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=1)
    batch = random_batch(n=3, n_pos=7, vocab=model.info.d_vocab, seed=2)
    graph = graph_for(model.info)
    assert sharded["eap"]["split"]
    for copies in (False, True):
        with hook_flags(model.bridge, True):
            whole = batch_edge_scores(
                model, graph, batch, AttributionConfig(), per_head_copies=copies
            )
        assert whole.scores.abs().max() > 0
        assert torch.equal(sharded["eap"][copies], whole.scores)


def test_plain_tensors_are_their_own_whole():
    t = torch.randn(4, 3)
    block, rows = shards.local_rows(t, 0)
    assert block is t and rows == slice(0, 4)
    assert torch.equal(shards.row_sums_of_squares(t, 1), (t.double() ** 2).sum(0))
    assert float(shards.squared_norm([t, t])) == pytest.approx(2 * float((t.double() ** 2).sum()))
    view = t[:, 1:]
    assert shards.storage_key(view)[0] == shards.storage_key(t)[0]
