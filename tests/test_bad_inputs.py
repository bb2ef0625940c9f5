"""Bad input gets one clear line (exit 2) naming the problem and the fix, and loses nothing saved.

Each case here was a traceback, a misleading message or a silent wrong result before.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time

import pytest

from circuitviz.cli import main
from circuitviz.runs import Run, RunStore

PAIR = {"clean": "the keys to the cabinet", "corrupt": "the key to the cabinet"}
PAIR |= {"answer": " are", "wrong": " is"}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def error_of(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_nan_threshold_is_refused_not_turned_into_an_empty_circuit(capsys):
    line = error_of(capsys, "discover", "--model", "demo", "--threshold", "nan")
    assert "--threshold must be a finite number" in line


def test_pairs_the_tokenizer_cannot_read_are_an_error_with_a_count(capsys, tmp_path):
    unknown = {**PAIR, "clean": "zorbly wibbet flarn quux", "corrupt": "zorbly wibbet flarn quuz"}
    path = write_jsonl(tmp_path / "alien.jsonl", [PAIR, unknown, unknown])
    for command in ("evaluate", "discover"):
        line = error_of(capsys, command, "--model", "demo", "--task", path, "--split", "all")
        assert "of 3 pairs, 2 have prompts that are mostly unknown tokens" in line
        assert "zorbly" in line


def test_pairs_whose_prompts_tokenise_identically_are_an_error(capsys, tmp_path):
    same = {**PAIR, "corrupt": PAIR["clean"]}
    path = write_jsonl(tmp_path / "same.jsonl", [PAIR, same])
    line = error_of(capsys, "evaluate", "--model", "demo", "--task", path, "--split", "all")
    assert "1 have clean and corrupted prompts that tokenise identically" in line


def test_a_huge_line_fails_at_once_with_the_bound(capsys, tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({**PAIR, "clean": "the keys " * 3_000_000}) + "\n")
    started = time.perf_counter()
    line = error_of(capsys, "evaluate", "--model", "demo", "--task", str(path))
    assert "huge.jsonl, line 1: longer than 1 MiB" in line
    assert time.perf_counter() - started < 60  # it did not tokenise 20 MB (loose bound)


def test_a_file_that_is_not_utf8_is_named_with_its_line(capsys, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        (json.dumps(PAIR) + "\n").encode()
        + json.dumps({**PAIR, "clean": "caf\u00e9 keys"}, ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    line = error_of(capsys, "evaluate", "--model", "demo", "--task", str(path))
    assert "latin1.jsonl, line 2: not UTF-8 text" in line


def test_prompts_longer_than_the_context_are_left_out_and_counted(capsys, tmp_path):
    long = {**PAIR, "clean": "the keys " * 40 + "to the cabinet"}
    long["corrupt"] = long["clean"].replace("keys", "key", 1)
    path = write_jsonl(tmp_path / "long.jsonl", [PAIR, long])
    assert main(["evaluate", "--model", "demo", "--task", path, "--split", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_examples"] == 1 and result["n_too_long"] == 1


def test_discover_checks_its_output_before_any_work(capsys, tmp_path):
    # A model that does not exist proves nothing was loaded before the check.
    missing = tmp_path / "no" / "dir" / "c.json"
    line = error_of(capsys, "discover", "--model", "./no/model", "--out", str(missing))
    assert f"the directory {missing.parent} does not exist" in line


def test_run_id_is_checked_before_the_model_loads(capsys, tmp_path):
    line = error_of(
        capsys, "tune", "--model", "./no/model", "--task", "sv-agreement", "--run-id", "../x"
    )
    assert line.startswith("circuitviz tune: error: --run-id must be")
    (tmp_path / "taken").mkdir()
    line = error_of(
        capsys,
        *("tune", "--model", "./no/model", "--task", "sv-agreement"),
        *("--run-id", "taken", "--runs-dir", str(tmp_path)),
    )
    assert "a run with this id already exists" in line and "--resume taken" in line


def test_messages_keep_their_quotes(capsys):
    line = error_of(capsys, "evaluate", "--model", "demo", "--task", "no-such-task")
    assert "unknown task 'no-such-task'" in line


TUNE = [
    *("--model", "demo", "--task", "sv-disagreement", "--steps", "6", "--batch-size", "8"),
    *("--n-train", "48", "--n-dev", "16", "--n-probe", "8", "--n-heldout", "8"),
    *("--eval-every", "0", "--snapshot-every", "0", "--top-n", "20", "--no-progress"),
]


def test_tune_accepts_a_file_of_the_users_own_pairs(capsys, tmp_path):
    from circuitviz.tasks import draw_examples

    rows = [
        {"clean": e.clean, "corrupt": e.corrupt, "answer": e.answer, "wrong": e.wrong}
        for e in draw_examples("sv-disagreement", split="all", n=400, seed=1)
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    argv = [*TUNE, "--task", path, "--runs-dir", str(tmp_path / "runs"), "--json"]
    assert main(["tune", *argv, "--steps", "2"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    run = RunStore([tmp_path / "runs"]).open(run_id)
    assert run.status == "finished" and run.task == path
    assert set(run.snapshots()["task"]) == {path}  # its "before" circuit is its own


def _run_with_file_size_limit(runs_dir, limit_bytes: int) -> subprocess.CompletedProcess:
    """``circuitviz tune`` in a process whose files may not grow past ``limit_bytes``: the kernel
    refuses the write (EFBIG), as a full disk would."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    argv = [*TUNE, "--checkpoint-every", "3", "--runs-dir", str(runs_dir)]
    return subprocess.run(
        [sys.executable, "-m", "circuitviz", "tune", *argv],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=600,
    )


def test_a_checkpoint_that_cannot_be_written_fails_the_run_in_one_line(tmp_path):
    done = _run_with_file_size_limit(tmp_path, 1_000_000)  # the demo checkpoint is ~6 MB
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert "could not write the checkpoint of step 3" in lines[-1]
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "run.sqlite").exists()]
    run = Run(run_dir)
    assert run.status == "failed" and "checkpoint of step 3" in run.status_message
    assert run.steps()["step"].tolist() == [1, 2, 3]  # every committed step is kept


def test_seconds_of_a_resumed_run_count_every_segment(tmp_path, capsys):
    from circuitviz.models import load_model
    from circuitviz.runs import RunWriter
    from circuitviz.tuning import TuneConfig, create_run, run_tuning

    config = TuneConfig(
        steps=6, batch_size=8, n_train=48, n_dev=16, n_probe=8, n_heldout=8, top_n=20
    )
    config = config.__class__.from_dict(
        {**config.to_dict(), "eval_every": 0, "snapshot_every": 0, "checkpoint_every": 3}
    )
    model = load_model("demo", device="cpu")

    def slow_then_stop(progress) -> None:
        time.sleep(0.5)
        if progress.step == 4:
            raise KeyboardInterrupt

    writer = create_run(model, "sv-disagreement", config, tmp_path)
    with pytest.raises(KeyboardInterrupt), writer:
        run_tuning(model, "sv-disagreement", config, writer, progress=slow_then_stop)
    # The step-3 checkpoint is written before step 3's progress call: steps 1-2 slept before it.
    first_segment = 2 * 0.5
    model = load_model("demo", device="cpu")
    with RunWriter.resume(writer.dir) as resumed:
        result = run_tuning(model, "sv-disagreement", config, resumed)
    assert result.summary["seconds"] >= first_segment


def test_model_and_device_mistakes_say_what_is_wrong(capsys, tmp_path):
    line = error_of(capsys, "graph", "--model", "demo", "--device", "mps")
    assert "device 'mps' is not available on this machine; use --device cpu" in line
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    line = error_of(capsys, "graph", "--model", str(not_a_model))
    assert "is a file but not a model" in line
    # A GGUF file cut short: the real SmolLM2 file's first 2 MB.
    from circuitviz.models.cache import smollm2_gguf

    truncated = tmp_path / "cut.gguf"
    with open(smollm2_gguf(), "rb") as whole:
        truncated.write_bytes(whole.read(2_000_000))
    line = error_of(capsys, "graph", "--model", str(truncated))
    assert "is not a readable GGUF file: it looks truncated or damaged" in line


def test_pretrain_demo_refuses_an_output_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = error_of(capsys, "pretrain-demo", "--out", str(blocker / "model"))
    assert "is a file, so no directory can be made under it" in line


@pytest.mark.parametrize("command", ["discover", "tune"])
def test_top_n_beside_threshold_is_refused_not_dropped(capsys, tmp_path, command):
    """--threshold implies --selection threshold; a --top-n beside it used to be dropped silently
    (discover kept 62 edges for --top-n 10)."""
    extra = ["--task", "sv-disagreement", "--runs-dir", str(tmp_path)] if command == "tune" else []
    line = error_of(
        capsys, command, "--model", "demo", "--top-n", "10", "--threshold", "0.1", *extra
    )
    assert "--top-n and --threshold choose the circuit two ways" in line
    assert not list(tmp_path.iterdir())


def test_a_small_file_s_empty_split_and_short_batch_name_the_fix_that_helps(capsys, tmp_path):
    """--split all left the held-out split empty and the message did not name --eval-split; a
    two-pair file was told to raise --n-train, which cannot give it more pairs."""
    pairs = write_jsonl(tmp_path / "two.jsonl", [PAIR, PAIR])
    line = error_of(capsys, "discover", "--model", "demo", "--task", pairs, "--split", "all")
    assert "split 'dev' (--eval-split)" in line and "--eval-split all uses every example" in line
    runs = ["--runs-dir", str(tmp_path / "runs")]
    line = error_of(capsys, "tune", "--model", "demo", "--task", pairs, *runs)
    assert "lower --batch-size (only 2 of the 2048 asked for are usable" in line
    assert "--n-train" not in line
    line = error_of(
        capsys, "tune", "--model", "demo", "--task", "sv-disagreement", "--n-train", "4", *runs
    )
    assert "lower --batch-size or raise --n-train (now 4)" in line


def test_discover_method_beside_its_new_name_is_refused(capsys):
    """discover --method (the old name) and --attribution share one setting; the later one won."""
    line = error_of(
        capsys, "discover", "--model", "demo", "--method", "eap", "--attribution=eap-ig"
    )
    assert "--method is the old name of --attribution: give one of them" in line
