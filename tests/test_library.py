"""``import circuitviz as cv``: a small API, each name documented with an example that runs."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import circuitviz as cv


def test_the_api_is_small_and_every_name_resolves():
    assert 10 <= len(cv.__all__) <= 20
    for name in cv.__all__:
        assert getattr(cv, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cv.nope  # noqa: B018


def test_importing_the_package_loads_no_engine():
    code = "import sys, circuitviz; print(sorted(m for m in ('torch', 'streamlit') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("name", sorted(cv.__all__))
def test_every_name_has_a_runnable_example(name):
    obj = getattr(cv, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"cv.{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f"the example of cv.{name} failed (see the output above)"


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "discover_circuit.py"


def run_example(python: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [python, str(EXAMPLE)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_example_script_reproduces_the_discover_command(capsys):
    from circuitviz.cli import main

    assert main(["discover", "--model", "demo", "--task", "sv-agreement", "--json"]) == 0
    command = json.loads(capsys.readouterr().out)
    example = run_example(sys.executable)
    for key in ("n_edges", "n_selected", "faithfulness", "random_faithfulness"):
        assert example[key] == pytest.approx(command[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_the_wheel_installs_without_the_app_and_the_library_works(tmp_path):
    """python -m build, then a fresh venv with the wheel and no extras: no streamlit or plotly,
    the library runs the example, and the dashboard says which extra it needs."""
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("circuitviz-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first and pinned, as ./run.sh does (a local CPU wheel here, PyPI's build elsewhere).
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, timeout=1200)
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=1200)
    python = str(venv / "bin" / "python")
    probe = (
        "import importlib.util as u; print([m for m in ('streamlit', 'plotly') if u.find_spec(m)])"
    )
    listed = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert listed.stdout.strip() == "[]"
    env = {**os.environ, "CIRCUITVIZ_DEMO_MODEL": str(ROOT / "assets" / "demo-model")}
    env.pop("PYTHONPATH", None)
    installed = run_example(python, env)
    assert installed == run_example(sys.executable)
    app = subprocess.run(
        [str(venv / "bin" / "circuitviz"), "app", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert app.returncode == 2 and "pip install 'circuitviz[app]'" in app.stderr


def test_from_model_takes_a_hf_model_or_a_bridge_and_scores_alike():
    import torch

    demo = cv.load_model("demo")
    graph = cv.graph_for(demo)
    data = cv.task_data("sv-agreement", demo, split="dev", n=8)
    config = cv.AttributionConfig(method="eap")
    expected = cv.attribute(demo, graph, data.batches(8), config).scores
    from transformers import AutoModelForCausalLM

    from circuitviz.models.loader import demo_model_dir

    plain = AutoModelForCausalLM.from_pretrained(demo_model_dir())
    for wrapped in (cv.from_model(plain, demo.tokenizer), cv.from_model(demo.bridge)):
        assert cv.graph_for(wrapped).edge_names() == graph.edge_names()
        scores = cv.attribute(wrapped, graph, data.batches(8), config).scores
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        cv.from_model(plain)
    with pytest.raises(ValueError, match="already wrapped by a TransformerBridge"):
        cv.from_model(demo.hf_model, demo.tokenizer)
    with pytest.raises(ValueError, match="Hugging Face causal LM or a TransformerBridge"):
        cv.from_model("demo")
