"""A tuned model out of the run store: ``run:RUN`` / ``run:RUN@STEP`` specs, ``export-model`` (loaded
back by plain ``transformers`` in a process without circuitviz), and ``evaluate`` on run models,
whole pair files and tasks with no usable example."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from circuitviz.cli import main
from circuitviz.models import ModelLoadError, load_model
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig

TINY = TuneConfig(
    top_n=20,
    steps=3,
    batch_size=4,
    n_train=16,
    n_dev=8,
    n_probe=4,
    n_heldout=4,
    eval_every=0,
    snapshot_every=0,
    checkpoint_every=2,
    lr=0.2,
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ids() -> torch.Tensor:
    return torch.randint(3, 500, (2, 6), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(_ids())


@pytest.fixture(scope="module", params=["random:gpt2-tiny", "random:llama-tiny"])
def tuned(request, tmp_path_factory):
    """A finished 3-step run (checkpoints at steps 2 and 3) and the logits of its final model."""
    root = tmp_path_factory.mktemp("runs")
    model = load_model(request.param, device="cpu")
    before = _logits(model)
    writer = create_run(model, "sv-disagreement", TINY, root, run_id="tiny")
    run_tuning(model, "sv-disagreement", TINY, writer)
    after = _logits(model)
    assert not torch.allclose(before, after)  # tuning changed the model
    return {"root": root, "spec": request.param, "before": before, "after": after}


def test_run_spec_loads_the_final_weights(tuned):
    model = load_model("run:tiny", device="cpu", runs_dir=tuned["root"])
    torch.testing.assert_close(_logits(model), tuned["after"], rtol=0, atol=0)
    assert model.spec == "run:tiny" and model.dtype == torch.float32
    assert model.origin == {"run_id": "tiny", "step": 3, "base_model": tuned["spec"]}


def test_run_spec_at_a_step_loads_that_checkpoint(tuned):
    from circuitviz.models.params import canonical_name
    from circuitviz.runs import Run

    model = load_model("run:tiny@2", device="cpu", runs_dir=tuned["root"])
    logits = _logits(model)
    assert not torch.allclose(logits, tuned["after"]) and not torch.allclose(
        logits, tuned["before"]
    )
    run = Run(tuned["root"] / "tiny")
    saved = run.load_checkpoint(2)
    params = {canonical_name(n): p for n, p in model.bridge.named_parameters()}
    for key, value in saved.items():
        if key.startswith("param/"):
            assert torch.equal(params[key.removeprefix("param/")], value), key


def test_run_spec_errors_name_the_problem(tuned, tmp_path):
    root = tuned["root"]
    with pytest.raises(
        ModelLoadError, match=r"no checkpoint at step 1; steps with a checkpoint: \[2, 3\]"
    ):
        load_model("run:tiny@1", device="cpu", runs_dir=root)
    with pytest.raises(ModelLoadError, match=r"no run 'nope' .*known runs: .*\btiny\b"):
        load_model("run:nope", device="cpu", runs_dir=root)
    # A run that never finished has no final weights, but its checkpoints load.
    model = load_model(tuned["spec"], device="cpu")
    writer = create_run(model, "sv-disagreement", TINY, root, run_id="killed")
    params = {n: p for n, p in model.bridge.named_parameters() if "mlp" in n}
    name, param = next(iter(params.items()))
    from circuitviz.models.params import canonical_name

    writer.save_checkpoint(1, {f"param/{canonical_name(name)}": param.detach() + 1}, {"step": 1})
    with pytest.raises(
        ModelLoadError, match=r"no final weights \(status 'running'.*run:killed@STEP"
    ):
        load_model("run:killed", device="cpu", runs_dir=root)
    loaded = load_model("run:killed@1", device="cpu", runs_dir=root)
    assert loaded.origin["step"] == 1


def test_a_run_tuned_from_a_run_loads_through_the_chain(tuned):
    root = tuned["root"]
    parent = load_model("run:tiny", device="cpu", runs_dir=root)
    writer = create_run(parent, "sv-disagreement", TINY, root, run_id="child")
    run_tuning(parent, "sv-disagreement", TINY, writer)
    child = load_model("run:child", device="cpu", runs_dir=root)
    assert child.origin["base_model"] == "run:tiny"
    torch.testing.assert_close(_logits(child), _logits(parent), rtol=0, atol=0)


PLAIN_TRANSFORMERS = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
ids = torch.randint(3, 500, (2, 6), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    logits = model(ids).logits
assert not any(name.startswith("circuitviz") for name in sys.modules)
torch.save(logits, sys.argv[2])
"""


def test_export_model_loads_in_plain_transformers(tuned, tmp_path, capsys):
    out = tmp_path / "tuned"
    code = main(
        ["export-model", "tiny", "--out", str(out), "--runs-dir", str(tuned["root"]), "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == "tiny" and report["step"] == 3
    assert {"config.json", "model.safetensors", "tokenizer.json", "circuitviz.json"} <= set(
        report["files"]
    )
    # Every file readable as a plain open() would leave it (transformers writes weights 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert {path.stat().st_mode & 0o777 for path in out.iterdir()} == {0o666 & ~umask}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(out), str(tmp_path / "logits.pt")],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    plain = torch.load(tmp_path / "logits.pt")
    torch.testing.assert_close(plain, tuned["after"], rtol=1e-5, atol=1e-5)
    assert main(["export-model", "tiny", "--out", str(out), "--runs-dir", str(tuned["root"])]) == 2
    assert "already holds a model" in capsys.readouterr().err


def test_evaluate_takes_run_models(tuned, capsys):
    args = ["evaluate", "--model", "run:tiny", "--runs-dir", str(tuned["root"])]
    assert main([*args, "--task", "sv-disagreement", "-n", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "run:tiny" and result["n_examples"] == 8


# --- evaluate on files: --split all, no usable example, no NaN ---------------------------------------


def _pairs(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_split_all_scores_the_whole_pair_file(tmp_path, capsys):
    nouns = ["dog", "cat", "key", "nurse", "table", "door", "cabinet", "friend"]
    records = [
        {
            "clean": f"the {a} near the {b}",
            "corrupt": f"the {a}s near the {b}",
            "answer": " is",
            "wrong": " are",
        }
        for a in nouns
        for b in nouns
        if a != b
    ]
    path = _pairs(tmp_path / "pairs.jsonl", records)
    assert main(["evaluate", "--model", "demo", "--task", path, "--split", "all", "--json"]) == 0
    assert _strict(capsys.readouterr().out)["n_examples"] == len(records)
    assert main(["evaluate", "--model", "demo", "--task", path, "--json"]) == 0
    assert 0 < _strict(capsys.readouterr().out)["n_examples"] < len(records) // 4
    one = _pairs(tmp_path / "one.jsonl", records[:1])
    assert main(["evaluate", "--model", "demo", "--task", one, "--split", "all", "--json"]) == 0
    result = _strict(capsys.readouterr().out)  # a std of one example is null, not NaN
    assert result["n_examples"] == 1 and result["logit_diff_std"] is None


def test_no_usable_example_exits_1_with_one_line(tmp_path, capsys):
    multi = [{"clean": "the dog", "corrupt": "the cat", "answer": " runs away", "wrong": " is"}]
    path = _pairs(tmp_path / "multi.jsonl", multi)
    assert main(["evaluate", "--model", "demo", "--task", path, "--split", "all", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if line.startswith("circuitviz")]
    assert len(errors) == 1 and "no usable example (1 with a multi-token answer" in errors[0]
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": " ".join(["the dog"] * 40), "response": "runs"}) + "\n")
    args = ["evaluate", "--model", "demo", "--task", f"sft:{long}", "--split", "all"]
    assert main([*args, "--max-length", "16", "--json"]) == 1
    assert "no usable example (1 dropped as longer than max_length=16)" in capsys.readouterr().err


def test_evaluate_scores_sft_tasks(tmp_path, capsys):
    path = tmp_path / "sft.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"the dog {i}", "response": "runs #### four"}) + "\n"
            for i in range(6)
        )
    )
    args = ["evaluate", "--model", "demo", "--task", f"sft:{path}", "--split", "all"]
    assert main([*args, "--max-new-tokens", "4", "--json"]) == 0
    result = _strict(capsys.readouterr().out)
    assert result["n_examples"] == 6 and result["n_with_answer"] == 6
    assert 0.0 <= result["exact_match"] <= 1.0 and result["response_loss"] > 0
    assert main([*args, "--max-new-tokens", "4"]) == 0
    assert "exact_match" in capsys.readouterr().out
    assert main(["evaluate", "--model", "demo", "--task", "nonsense"]) == 2
    assert "sft:FILE.jsonl" in capsys.readouterr().err
