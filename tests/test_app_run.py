"""The Run page starts real ``circuitviz`` processes in the background, follows them, stops them,
and says in plain words why one failed. Models are tiny random ones with the demo tokenizer."""

import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
sys.path.insert(0, str(Path(MAIN).parent))  # the app's own modules (as Streamlit does)

import jobs  # noqa: E402


@pytest.fixture
def page(tmp_path, monkeypatch, tmp_path_factory):
    from circuitviz.demo.tokenizer import build_demo_tokenizer

    tokenizer = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer().save_pretrained(tokenizer)
    monkeypatch.setenv(
        "CIRCUITVIZ_DEMO_MODEL", str(tokenizer)
    )  # what random:gpt2-tiny tokenizes with
    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("views/run.py").run()
    assert not at.exception
    started: list[jobs.Job] = []
    yield at, tmp_path, started
    for job in jobs.list_jobs(tmp_path):  # never leave a process behind
        jobs.stop_job(job, grace_s=1.0)


def start(at, *, model: str, steps: int, top_n: str = "20"):
    at.text_input[0].set_value(model)
    at.text_input[1].set_value(top_n)
    at.number_input[1].set_value(steps)
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]


def wait_done(job: jobs.Job, timeout_s: float = 240.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rc = jobs.exit_code(job)
        if rc is not None:
            return rc
        time.sleep(0.5)
    raise AssertionError(
        f"job {job.job_id} still running after {timeout_s} s:\n{jobs.log_tail(job)}"
    )


def job_cards(at) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.mark.slow
def test_start_a_tuning_run_and_watch_it_finish(page):
    at, root, _ = page
    start(at, model="random:gpt2-tiny", steps=3)
    (job,) = jobs.list_jobs(root)
    assert job.kind == "tune" and "--run-id" in job.argv
    assert at.query_params["run"] == job.job_id  # the Circuit page will follow this run
    assert wait_done(job) == 0, jobs.log_tail(job)
    at.run()
    assert f"`{job.job_id}` · finished" in job_cards(at)
    assert any(p.proto.value == 100 for p in at.get("progress"))
    at.switch_page("views/circuit.py").run()
    assert not at.exception and at.get("plotly_chart")


def test_a_failure_is_explained_in_plain_words(page):
    at, root, _ = page
    start(at, model=str(root / "no-such-model"), steps=3)
    (job,) = jobs.list_jobs(root)
    assert wait_done(job, 120) == 2
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "exit code 2" in errors and "no-such-model" in errors


@pytest.mark.slow
def test_stop_ends_a_running_job(page):
    at, root, _ = page
    start(at, model="random:gpt2-tiny", steps=100_000)
    (job,) = jobs.list_jobs(root)
    assert jobs.exit_code(job) is None
    next(b for b in at.button if b.label == "Stop").click().run()
    assert jobs.exit_code(job) is not None
    at.run()
    assert f"`{job.job_id}` · stopped" in job_cards(at)
    assert not [b for b in at.button if b.label == "Stop"]


def test_bad_top_n_is_refused_before_starting(page):
    at, root, _ = page
    start(at, model="random:gpt2-tiny", steps=3, top_n="ten")
    assert "Top-N must be a positive whole number" in " ".join(e.value for e in at.error)
    assert jobs.list_jobs(root) == []
