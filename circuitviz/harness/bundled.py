"""Building the data of circuitviz's bundled harness tasks (``tasks/``), so that the committed files
can be checked against their generator.

``circuitviz_sv_agreement``: the first ``n`` distinct test-split prompts that circuitviz's
``sv-agreement`` generator draws from ``random.Random(seed)``, each as ``{"prefix", "good", "bad",
"tags"}`` (the prompt, the correctly inflected verb, the other one), one JSON object per line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from circuitviz.tasks.base import split_of
from circuitviz.tasks.sv import generate_agreement


def sv_agreement_rows(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows: dict[str, dict] = {}
    for _ in range(200 * n):
        example = generate_agreement(rng)
        if split_of(example.clean) != "test" or example.clean in rows:
            continue
        rows[example.clean] = {
            "prefix": example.clean,
            "good": example.answer,
            "bad": example.wrong,
            "tags": list(example.tags),
        }
        if len(rows) == n:
            return list(rows.values())
    raise RuntimeError(f"only {len(rows)} distinct test prompts in {200 * n} draws")


def write_sv_agreement(path: str | Path, n: int = 64, seed: int = 0) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in sv_agreement_rows(n, seed)))
    return path


if __name__ == "__main__":
    print(write_sv_agreement(Path(__file__).resolve().parent / "tasks" / "sv_agreement.jsonl"))
