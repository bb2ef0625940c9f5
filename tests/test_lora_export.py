"""LoRA runs out of the run store: ``export-model --adapter-only`` writes a directory that peft itself
loads onto the plain base model and that computes what ``run:RUN`` computes; peft's own merge gives
the same edge scores as the run's merged weights; the merged export still loads in transformers."""

from __future__ import annotations

import dataclasses
import json

import peft  # the lora extra: ./run.sh test installs it
import pytest
import torch

from circuitviz.cli import main
from circuitviz.models import load_model, save_model
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig

TINY = TuneConfig(
    top_n=40,
    steps=4,
    batch_size=4,
    n_train=16,
    n_dev=8,
    n_probe=4,
    n_heldout=4,
    eval_every=0,
    snapshot_every=0,
    checkpoint_every=2,
    optimizer="adamw",
    lr=0.05,
    lora_rank=3,
    lora_alpha=5.0,
)
CASES = [
    ("random:gpt2-tiny", "lora", None),
    ("random:gpt2-tiny", "circuit-lora", 2),
    ("random:llama-tiny", "lora", None),
    ("random:llama-tiny", "circuit-lora", 2),
]


def _ids() -> torch.Tensor:
    return torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(1))


_BUILT: dict = {}


def _export(case, tmp_path_factory) -> dict:
    """A finished 4-step run of ``case`` exported with --adapter-only (built once per module)."""
    if case in _BUILT:
        return _BUILT[case]
    spec, method, groups = case
    root = tmp_path_factory.mktemp("runs")
    config = dataclasses.replace(TINY, method=method, mlp_groups=groups)
    model = load_model(spec, device="cpu")
    base_dir = tmp_path_factory.mktemp("base")
    save_model(model, base_dir)  # the untouched model, as plain transformers will load it
    with create_run(model, "sv-disagreement", config, root, run_id="tiny") as writer:
        run_tuning(model, "sv-disagreement", config, writer)
    out = tmp_path_factory.mktemp("adapter")
    code = main(
        ["export-model", "tiny", "--runs-dir", str(root), "--out", str(out), "--adapter-only"]
    )
    assert code == 0
    _BUILT[case] = {"root": root, "out": out, "base": base_dir, "spec": spec, "method": method}
    return _BUILT[case]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0][7:]}-{c[1]}")
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


def test_peft_loads_the_adapter_and_computes_the_run_model(exported):
    from transformers import AutoModelForCausalLM

    assert (exported["out"] / "adapter_config.json").is_file()
    assert (exported["out"] / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(exported["base"], dtype=torch.float32).eval()
    with torch.no_grad():
        untouched = base(_ids()).logits
    adapted = peft.PeftModel.from_pretrained(base, exported["out"]).eval()
    run_model = load_model("run:tiny", runs_dir=exported["root"])
    with torch.no_grad():
        theirs = adapted(_ids()).logits
        ours = run_model.bridge(_ids())
    assert not torch.allclose(theirs, untouched, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    config = json.loads((exported["out"] / "adapter_config.json").read_text())
    assert config["r"] == 3 and config["lora_alpha"] == 5.0
    if exported["method"] == "circuit-lora":
        assert config["rank_pattern"]  # per-unit factors become larger ranks, scale kept


def test_peft_merge_gives_the_snapshots_edge_scores(tmp_path_factory):
    """Snapshots score the run's merged weights; peft's own merge of the exported adapter, wrapped
    by circuitviz, scores the same edges (Llama, circuit-LoRA with neuron groups)."""
    exported = _export(CASES[3], tmp_path_factory)
    from transformers import AutoModelForCausalLM

    import circuitviz as cv

    base = AutoModelForCausalLM.from_pretrained(exported["base"], dtype=torch.float32).eval()
    merged = peft.PeftModel.from_pretrained(base, exported["out"]).merge_and_unload()
    run_model = load_model("run:tiny", runs_dir=exported["root"])
    theirs = cv.from_model(merged, run_model.tokenizer)
    graph = cv.graph_for(run_model)
    data = cv.task_data("sv-disagreement", run_model, split="dev", n=6)
    config = cv.AttributionConfig(method="eap")
    ours = cv.attribute(run_model, graph, data.batches(6), config).scores
    other = cv.attribute(theirs, graph, data.batches(6), config).scores
    torch.testing.assert_close(other, ours, rtol=1e-3, atol=1e-5)


def test_merged_export_and_adapter_refusals(exported, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert (
        main(["export-model", "tiny", "--runs-dir", str(exported["root"]), "--out", str(merged)])
        == 0
    )
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    ours = load_model("run:tiny", runs_dir=exported["root"])
    with torch.no_grad():
        torch.testing.assert_close(plain(_ids()).logits, ours.bridge(_ids()), rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    again = ["export-model", "tiny", "--runs-dir", str(exported["root"]), "--out"]
    assert main([*again, str(exported["out"]), "--adapter-only"]) == 2
    assert "already holds a model (adapter_config.json)" in capsys.readouterr().err


def test_adapter_only_refuses_runs_without_adapters(tmp_path, capsys):
    config = dataclasses.replace(TINY, method="circuit", steps=2)
    model = load_model("random:gpt2-tiny", device="cpu")
    with create_run(model, "sv-disagreement", config, tmp_path, run_id="plain") as writer:
        run_tuning(model, "sv-disagreement", config, writer)
    code = main(
        [
            "export-model",
            "plain",
            "--runs-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "x"),
            "--adapter-only",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "needs a lora or circuit-lora run" in err and err.count("\n") == 1
