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
import runform  # noqa: E402


@pytest.fixture
def page(tmp_path, monkeypatch, tmp_path_factory):
    from circuitviz.demo.tokenizer import build_demo_tokenizer

    tokenizer = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer().save_pretrained(tokenizer)
    monkeypatch.setenv(
        "CIRCUITVIZ_DEMO_MODEL", str(tokenizer)
    )  # what random:gpt2-tiny tokenizes with
    monkeypatch.setenv("CIRCUITVIZ_RUNS", str(tmp_path))
    monkeypatch.delenv("CIRCUITVIZ_ALLOW_REMOTE_JOBS", raising=False)
    from streamlit import config

    address = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")  # as `circuitviz app` serves it
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("views/run.py").run()
    assert not at.exception
    started: list[jobs.Job] = []
    yield at, tmp_path, started
    for job in jobs.list_jobs(tmp_path):  # never leave a process behind
        jobs.stop_job(job, grace_s=1.0)
    config.set_option("server.address", address)


def start(at, *, model: str, steps: int | None = None, top_n: str = "20", kind="tune", **fields):
    """Fill the form (only the given fields) and press Start."""
    if at.radio(key="rk").value != kind:
        at.radio(key="rk").set_value(kind).run()
    at.text_input[0].set_value(model)
    values = {"top_n": top_n, "steps": "" if steps is None else str(steps), **fields}
    for key, value in values.items():
        at.text_input(key=f"field-{kind}-{at.selectbox(key='rtask').value}-{key}").set_value(value)
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
    assert not at.exception and at.get("bidi_component")


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


def test_the_form_sends_only_what_the_user_set(page):
    """Left empty, a field stays out of the command line, so the task's own defaults apply."""
    at, root, _ = page
    start(at, model=str(root / "no-such-model"), top_n="")
    (job,) = jobs.list_jobs(root)
    assert job.argv == (
        "tune",
        "--model",
        str(root / "no-such-model"),
        "--task",
        "sv-disagreement",
        "--method",
        "circuit",
        "--runs-dir",
        str(root),
        "--run-id",
        job.job_id,
    )
    wait_done(job, 120)


def test_the_form_offers_intervals_and_shows_the_tasks_defaults(page):
    at, root, _ = page
    at.selectbox(key="rtask").set_value("gender-pronoun").run()
    field = "field-tune-gender-pronoun-"
    assert at.text_input(key=field + "lr").placeholder == "0.003 (this task's default)"
    assert at.text_input(key=field + "top_n").placeholder == "50 (this task's default)"
    assert at.text_input(key=field + "every").placeholder == "default"
    start(
        at,
        model=str(root / "no-such-model"),
        top_n="",
        eval_every="5",
        snapshot_every="4",
        checkpoint_every="0",
    )
    (job,) = jobs.list_jobs(root)
    argv = list(job.argv)
    for flag, value in (
        ("--eval-every", "5"),
        ("--snapshot-every", "4"),
        ("--checkpoint-every", "0"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert "--lr" not in argv and "--top-n" not in argv and "--steps" not in argv
    wait_done(job, 120)


def test_a_sweep_can_be_started(page):
    at, root, _ = page
    assert at.radio(key="rk").options == ["a tuning run", "a top-N sweep", "a circuit discovery"]
    start(at, model=str(root / "no-such-model"), kind="sweep", top_n="10, 25,50")
    (job,) = jobs.list_jobs(root)
    assert job.kind == "sweep"
    argv = list(job.argv)
    assert argv[0] == "sweep" and argv[argv.index("--top-n") + 1] == "10,25,50"
    assert "--run-id" not in argv  # each member names itself
    wait_done(job, 120)


def test_a_sweep_needs_its_top_n_values():
    with pytest.raises(ValueError, match="Top-N values"):
        runform.build_argv(
            "sweep",
            model="demo",
            task="sv-disagreement",
            method="circuit",
            values={},
            run_id="x",
            runs_dir="runs",
        )
    for bad, match in ((" 0", "positive"), ("1.5", "whole"), ("-3", "whole")):
        with pytest.raises(ValueError, match=match):
            runform.parse(runform.TUNE_FIELDS[0], bad)
    assert runform.parse(runform.TUNE_FIELDS[3], "3e-3") == "0.003"  # learning rate
    with pytest.raises(ValueError, match="positive number"):
        runform.parse(runform.TUNE_FIELDS[3], "nan")


def test_lora_rank_is_sent_for_lora_methods_only():
    def argv(method: str, rank: str) -> list[str]:
        return runform.build_argv(
            "tune",
            model="demo",
            task="sv-disagreement",
            method=method,
            values={"lora_rank": rank},
            run_id="x",
            runs_dir="runs",
        )

    got = argv("circuit-lora", "8")
    assert got[got.index("--lora-rank") + 1] == "8"
    assert "--lora-rank" not in argv("lora", "")  # empty: the engine's default rank
    with pytest.raises(ValueError, match="LoRA rank is for the lora and circuit-lora"):
        argv("circuit", "8")


def test_jobs_are_off_on_a_network_address(page, monkeypatch):
    """Served on anything but loopback, the Run page starts and stops nothing unless the
    dashboard was started with --allow-remote-jobs."""
    from streamlit import config

    at, root, _ = page
    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")  # what --host 0.0.0.0 serves on
    try:
        monkeypatch.delenv("CIRCUITVIZ_ALLOW_REMOTE_JOBS", raising=False)
        at.run()
        assert "Starting and stopping jobs is off" in " ".join(w.value for w in at.warning)
        assert next(b for b in at.button if b.label == "Start").disabled
        assert jobs.list_jobs(root) == []
        monkeypatch.setenv("CIRCUITVIZ_ALLOW_REMOTE_JOBS", "1")
        at.run()
        assert not next(b for b in at.button if b.label == "Start").disabled
    finally:
        config.set_option("server.address", old)


@pytest.mark.slow
def test_analyse_a_run_in_the_background_and_show_it(page):
    """A tuning run started here, then analysed from the same page: the job writes into the run,
    and the Mechanisms page shows it."""
    at, root, _ = page
    start(at, model="random:gpt2-tiny", steps=4)
    (tune,) = jobs.list_jobs(root)
    assert wait_done(tune) == 0, jobs.log_tail(tune)
    at.run()
    at.selectbox(key="analyse_run").set_value(tune.job_id)
    next(b for b in at.button if b.label == "Analyse").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (job,) = [j for j in jobs.list_jobs(root) if j.kind == "analyse"]
    assert job.argv[:2] == ("analyse", tune.job_id)
    assert wait_done(job) == 0, jobs.log_tail(job)
    at.run()
    assert f"`{job.job_id}` · finished" in job_cards(at)
    next(b for b in at.button if b.label == "Show").click().run()
    assert not at.exception
    assert at.get("plotly_chart"), "the Mechanisms page shows the analysis"
