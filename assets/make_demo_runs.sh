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
    --checkpoint-every 400 --run-id sv-disagreement-circuit --runs-dir $D --no-progress
$CV tune --model demo --task sv-disagreement --method full --steps 800 --checkpoint-every 0 \
    --run-id sv-disagreement-full --runs-dir $D --no-progress
$CV tune --model demo --task gender-pronoun --method circuit --top-n 200 --steps 800 --checkpoint-every 0 \
    --run-id gender-debias-circuit --runs-dir $D --no-progress
$CV rescore sv-disagreement-circuit --runs-dir $D --no-progress
$CV sweep --model demo --task sv-disagreement --top-n 10,25,50,100,200,400 --steps 400 \
    --checkpoint-every 0 --runs-dir $D --no-progress
# Keep the repository small: only the sv-disagreement circuit run keeps its model checkpoints (its
# rescore used them); the others drop theirs, and their checkpoint rows with them.
.venv/bin/python - <<'PY'
import shutil, sqlite3
from pathlib import Path
for run_dir in sorted(Path("assets/demo-runs").iterdir()):
    if run_dir.name in ("sv-disagreement-circuit",) or run_dir.name.startswith("smollm2-"):
        continue
    if not (run_dir / "run.sqlite").exists():
        continue
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        db.execute("DELETE FROM checkpoints")
    sqlite3.connect(run_dir / "run.sqlite").execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
