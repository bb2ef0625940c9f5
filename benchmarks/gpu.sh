#!/usr/bin/env bash
# Every benchmark on a CUDA GPU in bfloat16, in one command (a few minutes on a datacentre GPU):
#   bash benchmarks/gpu.sh [OUT_DIR]        (default benchmarks/gpu-results)
# 1. attribution.py: EAP and EAP-IG over a forward+backward, GPT-2 small's shape (16 x 32) and a
#    1B Llama shape (random weights, batch 8 x 512);
# 2. tuning.py: a circuit-tuning step over a full fine-tuning step (demo and GPT-2 small's shape);
# 3. memory.py: peak allocated memory of EAP and of a tuning step over their plain counterparts;
# 4. with two GPUs or more: tune --nproc 2 (nccl) next to one process on the same run, and
#    tune --nproc 2 --shard fsdp --grad-checkpointing on the 1B Llama shape (all 16 layers).
# Each writes JSON into OUT_DIR; the device's name is recorded with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-benchmarks/gpu-results}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: no CUDA device here (torch.cuda.is_available() is False); it measures a GPU" >&2
    exit 2
fi
"$PY" -c "import torch; print(torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
LLAMA_1B=$(mktemp --suffix=.json)
"$PY" - "$LLAMA_1B" <<'PY'
import json, sys
sys.path.insert(0, "benchmarks")
from memory import SHAPES
config = {k: v for k, v in SHAPES["llama-1b"].items() if k != "full_layers"}
config["num_hidden_layers"] = SHAPES["llama-1b"]["full_layers"]
json.dump(config, open(sys.argv[1], "w"))
PY
"$PY" benchmarks/attribution.py --device cuda --dtype bfloat16 --models random:gpt2 --repeats 5 \
    --json | tee "$OUT/attribution-gpt2.json"
"$PY" benchmarks/attribution.py --device cuda --dtype bfloat16 --models "random:$LLAMA_1B" \
    --batch 8 --n-pos 512 --repeats 3 --json | tee "$OUT/attribution-llama-1b.json"
"$PY" benchmarks/tuning.py --device cuda --dtype bfloat16 --models demo,random:gpt2 --repeats 8 \
    --json | tee "$OUT/tuning.json"
"$PY" benchmarks/memory.py --device cuda --dtype bfloat16 --shapes llama-1b:16,gpt2:12 \
    --batch 2 --seq 512 --json | tee "$OUT/memory.json"
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    RUNS=$(mktemp -d)
    ARGS=(--model random:gpt2 --task sv-disagreement --method circuit --steps 50 --batch-size 32
          --device cuda --runs-dir "$RUNS" --no-progress --json)
    /usr/bin/time -f "%e" -o "$OUT/nproc1.seconds" "$PY" -m circuitviz tune "${ARGS[@]}" \
        --run-id one > "$OUT/nproc1.json"
    /usr/bin/time -f "%e" -o "$OUT/nproc2.seconds" "$PY" -m circuitviz tune "${ARGS[@]}" \
        --run-id two --nproc 2 > "$OUT/nproc2.json"
    FSDP=(--model "random:$LLAMA_1B" --task arithmetic --method circuit --steps 20 --batch-size 8
          --dtype bfloat16 --device cuda --runs-dir "$RUNS" --no-progress --json)
    /usr/bin/time -f "%e" -o "$OUT/fsdp2.seconds" "$PY" -m circuitviz tune "${FSDP[@]}" \
        --run-id fsdp --nproc 2 --shard fsdp --grad-checkpointing > "$OUT/fsdp2.json"
fi
echo "gpu.sh: figures in $OUT"
