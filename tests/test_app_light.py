"""The dashboard and the plotting package never import torch: every page runs (in a fresh
interpreter, on real runs) and torch is still absent from ``sys.modules`` afterwards."""

import json
import subprocess
import sys
from pathlib import Path

from support.synthetic import write_synthetic_run

from circuitviz.graph.topology import build_graph

APP = Path(__file__).resolve().parents[1] / "app"

SCRIPT = """
import json, os, sys
sys.path.insert(0, {app!r})
from streamlit.testing.v1 import AppTest
import circuitviz.plotting.circuit, circuitviz.plotting.static, circuitviz.plotting.export
import circuitviz.plotting.web, circuitviz.plotting.heads, circuitviz.plotting.dynamics
errors = []
for page, query in [(None, {{"top_n": "20"}}), ("dynamics", {{}}), ("heads", {{}}),
                    ("export", {{}}), ("run", {{}}), ("tour", {{}})]:
    at = AppTest.from_file({main!r}, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{{page}}.py").run()
    errors += [str(e.value) for e in at.exception]
export = at.get("download_button")
print(json.dumps({{"torch": [m for m in sys.modules if m == "torch" or m.startswith("torch.")][:3],
                  "errors": errors}}))
"""


def test_the_dashboard_imports_no_torch(tmp_path):
    root = tmp_path / "runs"
    write_synthetic_run(
        root,
        run_id="svd-circuit",
        n_steps=40,
        graph=build_graph(2, 4, 2),
        snapshot_every=20,
        task="sv-disagreement",
    )
    script = SCRIPT.format(app=str(APP), main=str(APP / "main.py"))
    env = {"CIRCUITVIZ_RUNS": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["torch"] == [], "a dashboard page imported torch"
