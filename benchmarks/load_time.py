"""Load time of ``--model smollm2-135m``: the first load (GGUF conversion) and later loads, by phase.

    .venv/bin/python benchmarks/load_time.py [--json] [--repeats 2]

Each measurement runs in a fresh Python process (imports are a large share of a load), with an
empty ``$CIRCUITVIZ_CACHE`` for the first load and the filled one for later loads. Phases:

* imports: torch, transformers, transformer_lens (the bridge);
* first load only: dequantising the GGUF file, its tokenizer, building the plain model (on the meta
  device, as ``models.cache`` does, and, side by side, with the random initialisation the previous
  code paid for), writing the safetensors directory;
* every load: the tokenizer, the weights, booting the bridge;
* ``load_model`` end to end, as the CLI calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

FIRST = textwrap.dedent(
    """
    import json, time, torch
    t = {}
    s = time.perf_counter(); import transformers; import transformer_lens.model_bridge
    t["imports"] = time.perf_counter() - s
    from circuitviz.models import cache
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = cache.smollm2_gguf()
    s = time.perf_counter()
    q = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    t["dequantise"] = time.perf_counter() - s
    s = time.perf_counter(); AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    t["gguf_tokenizer"] = time.perf_counter() - s
    del q.config.quantization_config
    s = time.perf_counter(); type(q)(q.config).load_state_dict(q.state_dict())
    t["plain_model_random_init"] = time.perf_counter() - s
    s = time.perf_counter()
    with torch.device("meta"):
        plain = type(q)(q.config)
    plain.load_state_dict(q.state_dict(), assign=True)
    t["plain_model_meta"] = time.perf_counter() - s
    s = time.perf_counter(); cache.smollm2_dir()
    t["convert_total"] = time.perf_counter() - s
    print(json.dumps(t))
    """
)

LATER = textwrap.dedent(
    """
    import json, time
    t = {}
    s = time.perf_counter(); import torch, transformers; import transformer_lens.model_bridge
    t["imports"] = time.perf_counter() - s
    from circuitviz.models import cache, load_model, loader
    s = time.perf_counter(); d = cache.smollm2_dir(); t["cache_lookup"] = time.perf_counter() - s
    s = time.perf_counter(); tok = transformers.AutoTokenizer.from_pretrained(d)
    t["tokenizer"] = time.perf_counter() - s
    s = time.perf_counter()
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    t["weights"] = time.perf_counter() - s
    s = time.perf_counter()
    loader._wrap("smollm2-135m", hf, loader._prepare_tokenizer(tok), torch.device("cpu"),
                 torch.float32, d)
    t["bridge"] = time.perf_counter() - s
    s = time.perf_counter(); load_model("smollm2-135m", device="cpu")
    t["load_model_after_imports"] = time.perf_counter() - s
    print(json.dumps(t))
    """
)


def run(code: str, cache_dir: str) -> dict:
    env = {
        **os.environ,
        "CIRCUITVIZ_CACHE": cache_dir,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    start = __import__("time").perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    wall = __import__("time").perf_counter() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="later loads to time (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        first = run(FIRST, cache_dir)
        later = [run(LATER, cache_dir) for _ in range(args.repeats)]
    median = {key: statistics.median(r[key] for r in later) for key in later[0]}
    result = {
        "first_load": first,
        "later_load_median": median,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, phases in (("first load", first), ("later load (median)", median)):
        print(name)
        for key, value in phases.items():
            print(f"  {key:<28} {value:7.2f} s")


if __name__ == "__main__":
    main()
