#!/usr/bin/env bash
# Rebuild the bundled SmolLM2-135M run (assets/demo-runs/smollm2-sv-disagreement) with the project's
# own command: circuit-tuning SmolLM2-135M-Instruct (30 layers x 9 heads, 3 key/value heads, 70,651
# edges) on subject-verb disagreement, a circuit snapshot every 4 steps, no checkpoints (a few MB).
# It took 14 minutes on 2 shared CPU cores (load average 3-5). Only this run's directory is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D=assets/demo-runs
ID=smollm2-sv-disagreement
rm -rf "${D:?}/$ID"
.venv/bin/circuitviz tune --model smollm2-135m --task sv-disagreement --method circuit \
    --top-n 1000 --every 4 --steps 40 --lr 0.01 --batch-size 8 \
    --eval-every 4 --snapshot-every 4 --checkpoint-every 0 \
    --n-train 512 --n-dev 64 --n-probe 8 --n-heldout 32 \
    --run-id "$ID" --runs-dir "$D" --no-progress
# Fold the write-ahead log into the database, so the directory holds one file.
.venv/bin/python - "$D/$ID/run.sqlite" <<'PY'
import sqlite3, sys
with sqlite3.connect(sys.argv[1]) as db:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
