"""Circuit-tuning on the bundled demo model learns the paper's subject-verb disagreement flip."""

import pytest
import torch

from circuitviz.models import load_model
from circuitviz.runs import Run
from circuitviz.tuning import create_run, run_tuning
from circuitviz.tuning.config import TuneConfig


@pytest.mark.slow
def test_circuit_tuning_learns_the_flip_on_the_demo_model(tmp_path):
    model = load_model("demo", device="cpu")
    embed = model.bridge.transformer.wte.weight.detach().clone()
    # A shorter, hotter version of the README's 800-step run (about a minute on 2 CPU cores).
    config = TuneConfig(
        top_n=50,
        lr=0.05,
        steps=250,
        eval_every=0,
        snapshot_every=0,
        checkpoint_every=0,
    )
    writer = create_run(model, "sv-disagreement", config, tmp_path)
    with writer:
        result = run_tuning(model, "sv-disagreement", config, writer)
    summary = result.summary
    assert summary["base_accuracy"] < 0.1  # the demo model agrees: the flipped verb loses
    assert summary["final_accuracy"] >= 0.9
    assert summary["final_task_metric"] > 0
    assert 0 < summary["tuned_param_ratio"] < 1
    assert torch.equal(model.bridge.transformer.wte.weight, embed)
    assert Run(result.run_dir).status == "finished"
