"""Datasets of circuitviz's bundled lm-evaluation-harness tasks, read from files beside this one."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_sv_agreement(**kwargs):
    """``{"test": Dataset}`` of ``sv_agreement.jsonl`` (prefix, good, bad, tags)."""
    import datasets

    path = HERE / "sv_agreement.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
