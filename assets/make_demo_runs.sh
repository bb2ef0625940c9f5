#!/usr/bin/env bash
# Rebuild the bundled demo runs in assets/demo-runs with the project's own commands (about 6 minutes
# on 2 CPU cores). One thread per process: several torch processes sharing 2 cores with 2 threads each
# slowed a run down 20-fold (OpenMP threads spin while waiting for each other).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CV=".venv/bin/circuitviz"
D=assets/demo-runs
mkdir -p "$D"
# Everything but the SmolLM2 run (assets/make_smollm2_run.sh makes that one).
find "$D" -mindepth 1 -maxdepth 1 ! -name 'smollm2-*' -exec rm -rf {} +
$CV tune --model demo --task sv-disagreement --method circuit --top-n 200 --every 1 --steps 800 \
    --checkpoint-every 100 --run-id sv-disagreement-circuit --runs-dir $D --no-progress
$CV tune --model demo --task sv-disagreement --method full --steps 800 --checkpoint-every 100 \
    --run-id sv-disagreement-full --runs-dir $D --no-progress
$CV tune --model demo --task gender-pronoun --method circuit --top-n 200 --steps 800 --checkpoint-every 0 \
    --run-id gender-debias-circuit --runs-dir $D --no-progress
$CV rescore sv-disagreement-circuit --runs-dir $D --no-progress
# The mechanisms at every checkpoint (before the checkpoints are dropped below: every analysis the
# task allows, the gender run's prejudice risk per occupation included), and circuit- against full
# fine-tuning step by step.
$CV analyse sv-disagreement-circuit --against sv-disagreement-full --runs-dir $D --no-progress
$CV analyse sv-disagreement-full --runs-dir $D --no-progress
$CV analyse gender-debias-circuit --runs-dir $D --no-progress
$CV sweep --model demo --task sv-disagreement --top-n 10,25,50,100,200,400 --steps 400 \
    --checkpoint-every 0 --runs-dir $D --no-progress
# Keep the repository small: only the sv-disagreement circuit run keeps model checkpoints, those of
# steps 400 and 800 (the dashboard's run:RUN@STEP examples load them); the others drop theirs, and
# their checkpoint rows with them. The rescore and analyses made from the dropped ones stay.
.venv/bin/python - <<'PY'
import sqlite3
from pathlib import Path
for run_dir in sorted(Path("assets/demo-runs").iterdir()):
    if run_dir.name.startswith("smollm2-") or not (run_dir / "run.sqlite").exists():
        continue
    keep = (400, 800) if run_dir.name == "sv-disagreement-circuit" else ()
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute("SELECT step, path, state_path FROM checkpoints").fetchall()
        for step, path, state in rows:
            if step not in keep:
                (run_dir / path).unlink(missing_ok=True)
                (run_dir / state).unlink(missing_ok=True)
                db.execute("DELETE FROM checkpoints WHERE step = ?", (step,))
    if not keep and (run_dir / "checkpoints").is_dir():
        (run_dir / "checkpoints").rmdir()
    sqlite3.connect(run_dir / "run.sqlite").execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
