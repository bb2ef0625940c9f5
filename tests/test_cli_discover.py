"""``circuitviz graph`` and ``circuitviz discover`` end to end, on a tiny local model and task file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitviz.cli import main
from circuitviz.graph.io import load_graph
from circuitviz.graph.topology import build_graph

SUBJECTS = [("cat", "cats"), ("dog", "dogs"), ("key", "keys"), ("boy", "boys"), ("car", "cars")]
PLACES = ["table", "house", "river", "garden", "door", "road", "hill", "shop"]
WORDS = ["the", "near", "is", "are", *PLACES, *(w for pair in SUBJECTS for w in pair)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 with a word-level tokenizer over the task's words, saved as a
    Hugging Face directory, so the test needs neither the demo model nor a download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-model")
    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.save_pretrained(directory)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=16, vocab_size=len(vocab))
    config.bos_token_id = config.eos_token_id = 2
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    lines = []
    for singular, plural in SUBJECTS:
        for place in PLACES:
            for first, other, verb, wrong in (
                (singular, plural, " is", " are"),
                (plural, singular, " are", " is"),
            ):
                clean = f"the {first} near the {place}"
                corrupt = f"the {other} near the {place}"
                record = {"clean": clean, "corrupt": corrupt, "answer": verb, "wrong": wrong}
                lines.append(json.dumps(record))
    path = tmp_path_factory.mktemp("task") / "agreement.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_graph_prints_the_gpt2_small_counts(capsys, tiny_model_dir):
    assert (
        run_json(capsys, "graph", "--model", "random:gpt2", "--device", "cpu")["n_edges"] == 32_491
    )
    paper = run_json(capsys, "graph", "--model", str(tiny_model_dir), "--paper-graph")
    assert paper["paper_graph"] is True
    assert paper["n_edges"] == build_graph(2, 2, paper=True).n_edges == 25


def test_discover_writes_a_circuit_and_reports_faithfulness(
    capsys, tmp_path, tiny_model_dir, task_file
):
    out = tmp_path / "circuit.json"
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--task", str(task_file)]
    result = run_json(
        capsys,
        "discover",
        *common,
        "--method",
        "eap-ig",
        "--top-n",
        "25",
        "--out",
        str(out),
        "-n",
        "40",
        "--batch-size",
        "16",
        "--eval-split",
        "train",
        "--sweep",
    )
    for key in (
        "n_edges",
        "n_selected",
        "faithfulness",
        "random_faithfulness",
        "cpr",
        "cmd",
        "sign",
    ):
        assert key in result
    assert result["n_selected"] == 25 and result["method"] == "eap-ig-inputs"
    assert result["m_full"] != result["m_empty"]
    saved = load_graph(out)
    assert saved.circuit.n_edges == 25 and saved.graph.n_edges == result["n_edges"]
    assert saved.metadata["faithfulness"] == result["faithfulness"]
    assert "patched" in saved.metadata["sign"]


def test_discover_other_options_and_the_compact_format(capsys, tmp_path, tiny_model_dir, task_file):
    out = tmp_path / "circuit.safetensors"
    result = run_json(
        capsys,
        "discover",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--task",
        str(task_file),
        "--method",
        "eap",
        "--baseline",
        "mean",
        "--positions",
        "target",
        "--selection",
        "node-weighted",
        "--top-n",
        "12",
        "--prune",
        "--paper-graph",
        "--out",
        str(out),
        "-n",
        "24",
        "--eval-split",
        "train",
    )
    assert result["paper_graph"] is True
    assert result["n_selected"] == 12  # --prune removes nothing from the paper graph
    assert load_graph(out).circuit.n_edges == 12


def test_discover_rejects_impossible_requests(capsys, tiny_model_dir, task_file):
    base = ["discover", "--model", str(tiny_model_dir), "--device", "cpu", "--task", str(task_file)]
    assert main([*base, "--top-n", "1000000", "-n", "8", "--eval-split", "train"]) == 2
    assert "exceeds the graph" in capsys.readouterr().err
    assert main([*base, "--out", "circuit.csv"]) == 2
    assert ".safetensors" in capsys.readouterr().err
