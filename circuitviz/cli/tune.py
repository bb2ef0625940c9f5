"""``circuitviz tune``, ``circuitviz sweep`` and ``circuitviz rescore``: circuit-tuning and its
baselines, the intrinsic-dimension sweep over N, and re-scoring a run's checkpoints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from circuitviz.cli.common import UserError, add_model_args, load_model_from_args, print_json

SWEEP_COLUMNS = ("top_n", "final_task_metric", "final_accuracy", "mean_nodes", "tuned_param_ratio")


def register(subparsers) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="circuit-tune a model on a task (or fine-tune it fully, a random subgraph, LoRA or "
        "circuit-LoRA)",
        description="Every K steps discover the task's circuit on the current batch and update only "
        "the parameters its nodes own; everything else stays bit-identical. Every step is recorded "
        "in the run store (see `circuitviz runs`).",
    )
    add_model_args(tune)
    tune.add_argument("--task", help=_task_help() + " (required, unless --resume)")
    tune.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    tune.add_argument("--run-id", help="name the run (default <task>-<method>-<time>-<hex>)")
    tune.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel over N processes (torch.distributed: gloo on the CPU, nccl on GPUs; "
        "each takes 1/N of every batch, results equal one process's). Also: torchrun "
        "--nproc-per-node N -m circuitviz tune ... (default: 1)",
    )
    _add_tune_args(tune, sweep=False)
    tune.set_defaults(func=tune_command)

    sweep = subparsers.add_parser(
        "sweep",
        help="circuit-tune once per circuit size N (the node-level intrinsic-dimension curve)",
        description="Run `tune` for each N, one run each, sharing a sweep id; print final task "
        "metric, nodes and tuned-parameter ratio against N.",
    )
    add_model_args(sweep)
    sweep.add_argument("--task", required=True, help=_task_help())
    _add_tune_args(sweep, sweep=True)
    sweep.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the N runs in parallel as Ray tasks (one CPU each, one GPU each on CUDA): a "
        "local Ray with this machine's CPUs, or the cluster at ADDRESS (its workers must see "
        "--runs-dir). Needs pip install 'circuitviz[ray]'",
    )
    sweep.set_defaults(func=sweep_command)

    rescore = subparsers.add_parser(
        "rescore",
        help="re-score a run's checkpoints on a fixed probe set, with a resampling noise floor",
    )
    rescore.add_argument("run", help="a run id or run directory")
    rescore.add_argument("--probe-size", type=int, default=None, help="default: the run's n_probe")
    rescore.add_argument(
        "--resamples", type=int, default=8, help="resampled probe sets (default 8)"
    )
    rescore.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    _add_store_args(rescore)
    rescore.set_defaults(func=rescore_command)


def _task_help() -> str:
    from circuitviz.tasks.catalog import task_names

    return (
        f"{', '.join(task_names())}, a .jsonl file of your own pairs, sft:FILE.jsonl "
        "(prompt/response/answer) or hf:DATASET[:CONFIG][:SPLIT] (a local dataset or file offline)"
    )


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="where runs live (default $CIRCUITVIZ_RUNS or ./runs)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# Which argument group each TuneConfig field's flag appears in (others: "training"); the nested
# attribution options form their own group.
_CIRCUIT_FIELDS = (
    "method",
    "selection",
    "top_n",
    "threshold",
    "every",
    "topn_schedule",
    "topn_start",
    "topn_warmup",
    "paper_graph",
    "layer0_qkv",
    "random_ratio",
    "random_seed",
    "circuit_forward",
)
_RECORDING_FIELDS = (
    "eval_every",
    "snapshot_every",
    "checkpoint_every",
    "n_train",
    "n_dev",
    "n_probe",
    "n_heldout",
)


def _groups() -> dict[str, str]:
    from circuitviz.options import option_specs
    from circuitviz.tuning.config import TuneConfig

    groups = {}
    for spec in option_specs(TuneConfig):
        if spec.is_config:
            groups |= {f"{spec.name}.{sub.name}": spec.name for sub in option_specs(spec.kind)}
        elif spec.name in _CIRCUIT_FIELDS:
            groups[spec.name] = "circuit"
        elif spec.name.startswith("lora_"):
            groups[spec.name] = "lora"
        elif spec.name in _RECORDING_FIELDS:
            groups[spec.name] = "recording"
        else:
            groups[spec.name] = "training"
    return groups


def _task_notes(dotted: str) -> str:
    """ "pretrained models: adamw; instruction tasks: process; gender-pronoun: 50": where a default
    differs by model, task kind or task (``TuneConfig.defaults_for``)."""
    from circuitviz.tasks.catalog import CATALOG, KIND_TUNE_DEFAULTS
    from circuitviz.tuning.config import PRETRAINED_DEFAULTS

    layers = [
        ("pretrained models", PRETRAINED_DEFAULTS),
        ("instruction tasks", KIND_TUNE_DEFAULTS["sft"]),
    ]
    layers += [(name, info.tune_defaults) for name, info in sorted(CATALOG.items())]
    notes = []
    for name, layer in layers:
        value = _lookup(layer, dotted)
        if value is not None:
            notes.append(f"{name}: {value:g}" if isinstance(value, float) else f"{name}: {value}")
    return ", ".join(notes)


def _lookup(layer, dotted: str):
    for part in dotted.split("."):
        if not isinstance(layer, dict) and not hasattr(layer, "get"):
            return None
        layer = layer.get(part)
        if layer is None:
            return None
    return layer


def _add_tune_args(parser: argparse.ArgumentParser, *, sweep: bool) -> None:
    from circuitviz.cli.flags import add_config_flags, flag_of
    from circuitviz.options import option_specs
    from circuitviz.tuning.config import TuneConfig

    defaults = TuneConfig()
    groups = _groups()
    for title in ("circuit", "lora", "attribution", "training", "recording"):
        parser.add_argument_group(title)
    if sweep:
        top_n = next(spec for spec in option_specs(TuneConfig) if spec.name == "top_n")
        _find_group(parser, "circuit").add_argument(
            flag_of(top_n),
            required=True,
            metavar="N1,N2,...",
            help="comma-separated circuit sizes, e.g. 10,50,200",
        )
    add_config_flags(
        parser,
        TuneConfig,
        defaults,
        groups=groups,
        skip=("top_n",) if sweep else (),
        extra_defaults=_task_notes,
    )
    _add_store_args(parser)


def _find_group(parser: argparse.ArgumentParser, title: str):
    return next(group for group in parser._action_groups if group.title == title)


def build_config(args: argparse.Namespace, task: str, *, top_n: int | None = None):
    """A TuneConfig from the parsed arguments: the user's values over the task's, the task kind's
    and the model's defaults over TuneConfig's own (``TuneConfig.defaults_for``). ``--threshold``
    alone implies ``--selection threshold``."""
    from circuitviz.cli.flags import build_config as build
    from circuitviz.cli.flags import given_values
    from circuitviz.tuning.config import TuneConfig

    layers = TuneConfig.defaults_for(task, args.model, runs_dir=args.runs_dir)
    given = given_values(args, TuneConfig)
    if top_n is not None:
        given["top_n"] = top_n
    if "threshold" in given and "selection" not in given:
        given["selection"] = "threshold"
    if given.get("selection") == "threshold" and "top_n" in given:
        from circuitviz.cli.discover import THRESHOLD_AND_TOP_N

        raise UserError(THRESHOLD_AND_TOP_N)
    if "epochs" in given and "steps" not in given:
        given["steps"] = None
    lora = sorted(key for key in given if key.startswith("lora_"))
    method = given.get("method", "circuit")
    if lora and method not in ("lora", "circuit-lora"):
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in lora)
        raise UserError(
            f"{flags}: for --method lora or circuit-lora only, not {method!r}; leave "
            f"{'it' if len(lora) == 1 else 'them'} out or change the method"
        )
    try:
        return build(TuneConfig, TuneConfig(), *layers, given)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _root(args: argparse.Namespace) -> Path:
    from circuitviz.runs import default_roots

    return default_roots(args.runs_dir)[0]


def _announce(args, run_id: str, run_dir: Path) -> None:
    if os.environ.get("RANK", "0") != "0":  # a data-parallel run is announced by rank 0 alone
        return
    stream = sys.stderr if args.json else sys.stdout
    print(f"run {run_id}\n  dir {run_dir}", file=stream, flush=True)


def _progress_bar(args, total: int, desc: str | None = None):
    """(callback, close) for a tqdm bar over optimizer steps; no-ops with --no-progress."""
    if args.no_progress:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", dynamic_ncols=True, desc=desc, file=sys.stderr)

    def update(p) -> None:
        shown = {"loss": f"{p.loss:.3f}"}
        if p.task_metric is not None:
            shown["metric"] = f"{p.task_metric:.2f}"
        if p.accuracy is not None:
            shown["acc"] = f"{p.accuracy:.2f}"
        shown["nodes"] = p.n_nodes
        shown["edges"] = p.n_edges
        bar.set_postfix(shown, refresh=False)
        bar.update(p.step - bar.n)

    return update, bar.close


def _engine_errors():
    from circuitviz.runs import RunCorrupt, RunNotFound, RunStoreError
    from circuitviz.tuning.loop import CheckpointError
    from circuitviz.tuning.optim import NonFiniteLoss

    return (ValueError, RunStoreError, RunNotFound, RunCorrupt, NonFiniteLoss, CheckpointError)


def tune_command(args: argparse.Namespace) -> int:
    from circuitviz.tuning import distributed

    if args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    if args.resume:
        _refuse_settings_on_resume(args)
    if args.nproc > 1 and distributed.world_size() == 1:
        return _launch(args)
    if distributed.world_size() > 1:
        from circuitviz.models import ModelLoadError
        from circuitviz.models.loader import resolve_device

        try:  # nccl and one GPU per process (LOCAL_RANK) when the model goes to CUDA
            distributed.init(resolve_device(args.device))
        except ModelLoadError as exc:
            raise UserError(str(exc)) from exc
        if distributed.rank() != 0:  # rank 0 reports; the others only compute
            args.no_progress = True
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of this worker)
    if args.resume:
        return _resume(args)
    if not args.task:
        raise UserError("--task is required (or --resume RUN to continue a run)")
    if args.run_id is not None:
        from circuitviz.runs.fields import check_run_id

        try:
            check_run_id(args.run_id)
        except ValueError as exc:
            raise UserError(str(exc).replace("run_id", "--run-id", 1)) from exc
        if distributed.rank() == 0 and (_root(args) / args.run_id).exists():
            raise UserError(
                f"--run-id {args.run_id}: a run with this id already exists under {_root(args)}; "
                f"choose another id, or continue it with --resume {args.run_id}"
            )
    from circuitviz.tuning.data import build_tuning_data
    from circuitviz.tuning.storage import create_run

    config = build_config(args, args.task)
    _check_ranks(config)
    model = load_model_from_args(args)
    try:
        if config.shard == "fsdp":
            from circuitviz.tuning.distributed import check_shardable

            check_shardable(model)
        data = build_tuning_data(model, args.task, config)
    except _engine_errors() as exc:
        raise UserError(str(exc)) from exc
    writer = _open_on_every_rank(
        lambda: create_run(model, args.task, config, _root(args), run_id=args.run_id)
    )
    _announce(args, writer.run_id, writer.dir)
    update, close = _progress_bar(args, data.total_steps(config))
    return _run_to_end(args, model, args.task, config, writer, data, update, close)


def _check_ranks(config) -> None:
    """Refuse up front what cannot split across the processes (``torchrun`` included), and
    ``--shard fsdp`` in one process."""
    from circuitviz.tuning import distributed

    try:
        distributed.check_config(config, distributed.world_size())
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _open_on_every_rank(open_writer):
    """``open_writer()`` (a RunWriter) in one process. In a data-parallel run rank 0 calls it and
    tells the others how it went and where the run is (its id may be new: ``torchrun`` without
    ``--run-id``); they then open the run to read (``FollowerWriter``), or raise rank 0's error."""
    import torch.distributed as dist

    from circuitviz.tuning.distributed import FollowerWriter

    if not dist.is_initialized():
        try:
            return open_writer()
        except _engine_errors() as exc:
            raise UserError(str(exc)) from exc
    outcome: list = [None, None]  # (error, run directory)
    writer = None
    if dist.get_rank() == 0:
        try:
            writer = open_writer()
            outcome[1] = str(writer.dir)
        except _engine_errors() as exc:
            outcome[0] = str(exc)
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise UserError(outcome[0])
    return writer if writer is not None else FollowerWriter.open(Path(outcome[1]))


def _launch(args: argparse.Namespace) -> int:
    """``tune --nproc N``: check the options here, then start N workers through torch's launcher
    (``torch.distributed.run``), each running this same command without ``--nproc`` on the same
    run id, with 1/N of the CPUs' threads. Returns the launcher's exit code."""
    import subprocess

    from circuitviz.runs.fields import new_run_id, task_slug
    from circuitviz.threads import thread_env
    from circuitviz.tuning import distributed

    argv = _without_flag(args.argv, "--nproc")
    if not args.resume:
        if not args.task:
            raise UserError("--task is required (or --resume RUN to continue a run)")
        config = build_config(args, args.task)
        try:
            distributed.check_config(config, args.nproc)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        run_id = args.run_id
        if run_id is None:
            run_id = new_run_id(task_slug(args.task), config.method)
            argv += ["--run-id", run_id]
        run_dir = _root(args) / run_id
        if run_dir.exists():  # not this launch's run: the workers refuse it
            run_dir = None
    else:
        run_dir = _run_dir(args)
    # Where the launcher records a run whose rank 0 ended without a word (``tuning.launch``).
    said = []
    if run_dir is not None:
        resume = _continue_command(args, run_dir.name, args.nproc)
        said = ["--run-dir", str(run_dir), "--continue-with", resume]
    command = [
        sys.executable,
        "-m",
        "circuitviz.tuning.launch",
        *said,
        "--standalone",
        f"--nproc-per-node={args.nproc}",
        "-m",
        "circuitviz",
        *argv,
    ]
    return subprocess.run(command, env=thread_env(args.nproc), check=False).returncode


def _run_dir(args: argparse.Namespace) -> Path | None:
    """The directory of the run ``--resume`` names; None where there is none (the workers say so)."""
    from circuitviz.runs import RunStore, RunStoreError

    try:
        return RunStore.default(args.runs_dir).open(args.resume).dir
    except RunStoreError:
        return None


def _without_flag(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out


def _run_to_end(args, model, task, config, writer, data, update, close) -> int:
    from circuitviz.tuning.loop import run_tuning

    try:
        with writer:
            try:
                result = run_tuning(model, task, config, writer, progress=update, data=data)
            except RuntimeError as exc:
                from circuitviz.tuning.distributed import lost_peer

                if not lost_peer(exc):
                    raise
                close()
                return _lost_peer(args, writer, exc)
    except KeyboardInterrupt:
        close()
        print(
            "\nstopped; every step so far is recorded. Continue with: "
            + _continue_command(args, writer.dir.name),
            file=sys.stderr,
        )
        return 130
    except _engine_errors() as exc:
        raise UserError(f"{exc} (run {writer.run_id} kept at {writer.dir})") from exc
    finally:
        close()
    return _report(args, result.run_id, result.run_dir, result.summary)


def _continue_command(args, run_id: str, nproc: int | str | None = None) -> str:
    """The command that resumes run ``run_id`` (on ``nproc`` processes): by the path it was
    resumed by, if it was, else by id."""
    import shlex

    by_path = args.resume and len(Path(args.resume).parts) > 1
    return (
        f"circuitviz tune --resume {shlex.quote(args.resume if by_path else run_id)}"
        + (f" --nproc {nproc}" if nproc is not None else "")
        + (
            f" --runs-dir {shlex.quote(str(args.runs_dir))}"
            if args.runs_dir and not by_path
            else ""
        )
    )


def _lost_peer(args, writer, exc: RuntimeError) -> int:
    """Another rank went away: say so in one line (rank 0), mark the run failed with that line,
    and exit 2, ignoring SIGTERM from the line on. Torch's launcher SIGTERMs the ranks left when one
    dies, and speaks for rank 0 when rank 0 ends by a signal unless the run holds rank 0's line
    (``tuning.launch``): rank 0 must not end between its line and its mark."""
    import signal

    from circuitviz.tuning.launch import LOST_PEER

    message = (
        f"{LOST_PEER} ({type(exc).__name__}: "
        f"{str(exc).strip().splitlines()[0][:160]}); "
        f"run {writer.run_id} is kept at {writer.dir} as failed with every step recorded so "
        "far. Continue it with: "
        + _continue_command(args, writer.dir.name, os.environ.get("WORLD_SIZE", "N"))
    )
    # Ignored from here on: this process stops right after, as a SIGTERM asks.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("RANK", "0") == "0":
        print(f"circuitviz tune: error: {message}", file=sys.stderr, flush=True)
    writer.set_status("failed", message)
    return 2


def _refuse_settings_on_resume(args: argparse.Namespace) -> None:
    """A resumed run continues with the settings it was started with (bit-identically); a setting
    given beside ``--resume`` would be ignored, so it is refused by name, before any work."""
    from circuitviz.cli.flags import flags_of, given_values
    from circuitviz.options import option_specs
    from circuitviz.tuning.config import TuneConfig

    def flags(given: dict, cls: type) -> list[str]:
        out = []
        for spec in option_specs(cls):
            if spec.name in given:
                nested = spec.is_config and isinstance(given[spec.name], dict)
                out += flags(given[spec.name], spec.kind) if nested else [flags_of(spec)[0]]
        return out

    named = flags(given_values(args, TuneConfig), TuneConfig)
    named += [
        flag
        for flag, value in (
            ("--task", args.task),
            ("--run-id", args.run_id),
            ("--dtype", args.dtype),
        )
        if value is not None
    ]
    argv = getattr(args, "argv", [])
    if args.model != "demo" or any(item.split("=")[0] == "--model" for item in argv):
        named.insert(0, "--model")  # its default is a value, so a given one shows in argv
    if named:
        raise UserError(
            f"--resume {args.resume} continues the run with the settings it was started with; "
            f"{', '.join(named)} would be ignored: drop {'it' if len(named) == 1 else 'them'} "
            "(beside --resume only --nproc, --device, --runs-dir, --json and --no-progress apply), "
            "or start a new run with the settings you want"
        )


def _resume(args: argparse.Namespace) -> int:
    from circuitviz.models import ModelLoadError, load_model
    from circuitviz.runs import RunStore, RunWriter
    from circuitviz.tuning.data import build_tuning_data
    from circuitviz.tuning.storage import config_from_run

    store = RunStore.default(args.runs_dir)
    try:
        run = store.open(args.resume)
    except _engine_errors() as exc:
        raise UserError(str(exc)) from exc
    if run.kind != "tune":
        raise UserError(f"run {run.id} is a {run.kind} run; only tune runs can be resumed")
    if run.status == "finished":
        print(f"run {run.id} already finished; nothing to do", file=sys.stderr)
        return _report(args, run.id, run.dir, run.summary)
    config = config_from_run(run.config)
    _check_ranks(config)
    dtype = str(run.config.get("dtype", "float32")).removeprefix("torch.")
    try:
        model = load_model(run.model_spec, device=args.device, dtype=dtype, runs_dir=args.runs_dir)
        data = build_tuning_data(model, run.task, config)
    except (ModelLoadError, *_engine_errors()) as exc:
        raise UserError(str(exc)) from exc
    writer = _open_on_every_rank(lambda: RunWriter.resume(run.dir))
    _announce(args, run.id, run.dir)
    update, close = _progress_bar(args, data.total_steps(config))
    return _run_to_end(args, model, run.task, config, writer, data, update, close)


def _report(args, run_id: str, run_dir: Path, summary: dict) -> int:
    if args.json:
        print_json({"run_id": run_id, "dir": run_dir, "summary": summary})
        return 0
    print(f"run {run_id} finished ({run_dir})")
    for key in (
        "final_accuracy",
        "final_task_metric",
        "final_lm_loss",
        "base_accuracy",
        "base_lm_loss",
        "tuned_param_ratio",
        "mean_nodes",
        "seconds",
    ):
        if key in summary:
            value = summary[key]  # None where a run has no such figure (no answers to match)
            print(f"  {key:<20} {'-' if value is None else format(value, '.4g')}")
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from circuitviz.tuning.sweep import run_sweep, run_sweep_ray

    try:
        top_ns = [int(part) for part in args.top_n.split(",") if part.strip()]
    except ValueError as exc:
        raise UserError(f"--top-n must be comma-separated integers, got {args.top_n!r}") from exc
    if not top_ns:
        raise UserError("--top-n needs at least one N")
    config = build_config(args, args.task, top_n=top_ns[0])
    for n in top_ns:
        build_config(args, args.task, top_n=n)  # every N valid before anything runs
    model = load_model_from_args(args)
    closers = []

    def progress(n: int):
        update, close = _progress_bar(args, config.steps or 0, desc=f"N={n}")
        closers.append(close)
        return update

    def on_start(n: int, run_id: str, run_dir: Path) -> None:
        _announce(args, run_id, run_dir)

    try:
        if args.ray is not None:
            address = None if args.ray == "local" else args.ray
            sweep_id, rows = run_sweep_ray(
                model, args.task, config, top_ns, _root(args), address=address, on_start=on_start
            )
        else:
            sweep_id, rows = run_sweep(
                model, args.task, config, top_ns, _root(args), progress=progress, on_start=on_start
            )
    except _engine_errors() as exc:
        raise UserError(str(exc)) from exc
    finally:
        for close in closers:
            close()
    if args.json:
        print_json({"sweep_id": sweep_id, "rows": rows})
        return 0
    print(f"sweep {sweep_id}")
    header = (*SWEEP_COLUMNS, "final_lm_loss", "run_id")
    cells = [header] + [tuple(_cell(row[key]) for key in header) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rescore_command(args: argparse.Namespace) -> int:
    from circuitviz.models import ModelLoadError, load_model
    from circuitviz.runs import RunStore
    from circuitviz.tuning.rescore import rescore_run

    if args.probe_size is not None and args.probe_size < 1:
        raise UserError(f"--probe-size must be >= 1, got {args.probe_size}")
    if args.resamples < 0:
        raise UserError(f"--resamples must be >= 0, got {args.resamples}")
    try:
        run = RunStore.default(args.runs_dir).open(args.run)
    except _engine_errors() as exc:
        raise UserError(str(exc)) from exc
    if run.is_live():
        raise UserError(f"run {run.id} is being written by another process; wait for it to end")
    dtype = str(run.config.get("dtype", "float32")).removeprefix("torch.")
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(unit="checkpoint", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        model = load_model(run.model_spec, device=args.device, dtype=dtype)
        steps = rescore_run(
            model, run, probe_size=args.probe_size, resamples=args.resamples, progress=progress
        )
    except (ModelLoadError, *_engine_errors()) as exc:
        raise UserError(str(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    payload = {"run_id": run.id, "dir": run.dir, "steps": steps, "resamples": args.resamples}
    if args.json:
        print_json(payload)
    else:
        print(f"rescored {len(steps)} checkpoints of run {run.id}: steps {steps}")
    return 0
