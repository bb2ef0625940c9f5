"""Prejudice risk per occupation: its mean is the gender task's own reported prejudice risk."""

from __future__ import annotations

import pytest

from circuitviz.analysis.bias import occupation_risks
from circuitviz.models import load_model
from circuitviz.tasks import build_task_data, evaluate_task


def test_occupation_risks_average_to_the_tasks_prejudice_risk():
    model = load_model("demo", device="cpu")
    data = build_task_data("gender-pronoun", model.tokenizer, split="dev", n=96, seed=0)
    risks = occupation_risks(model, data)
    assert len(risks) > 5 and all(0 <= r <= 1 for r in risks.values())
    assert max(risks.values()) - min(risks.values()) > 0.05  # a distribution, not one value
    reported = evaluate_task(model, "gender-pronoun", split="dev", n=96, seed=0)
    assert sum(risks.values()) / len(risks) == pytest.approx(reported["prejudice_risk"], rel=1e-4)


def test_a_task_without_occupations_is_refused():
    model = load_model("demo", device="cpu")
    data = build_task_data("sv-agreement", model.tokenizer, split="dev", n=8, seed=0)
    with pytest.raises(ValueError, match="tags no occupation"):
        occupation_risks(model, data)
