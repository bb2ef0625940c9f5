"""Running lm-evaluation-harness tasks on a circuitviz model, in this process.

Researchers judge a fine-tuned model's general ability with lm-evaluation-harness (Gao et al.,
EleutherAI) rather than with a tool's own loss. For a loaded model (``load_model``, so any spec,
``run:RUN`` included: a LoRA run's adapters are already merged into the weights):

1. Resolve the task names before any model loads: circuitviz's bundled tasks (``tasks/``, on
   local files) and ``include_path`` first; lm-eval's own catalogue (about 14,000 entries, some
   seconds to index) only when a name is not found there. An unknown name is an error naming it.
2. Wrap the model for lm-eval: its ``HFLM`` class on ``models.plain.plain_hf_model(model)``, a
   plain ``transformers`` model sharing the bridged model's tensors (no copy), with the model's
   tokenizer. lm-eval then computes log-likelihoods and generations exactly as it does for any
   Hugging Face model.
3. Evaluate one task at a time (``simple_evaluate``), so a dataset that cannot be loaded (hub
   datasets offline) is reported as one line naming that task and its dataset.
4. Keep, per task (subtasks of a group each on their own): every metric (``acc,none`` becomes
   ``acc``; another filter is kept in brackets, ``exact_match[strict-match]``), its standard error,
   whether higher is better, the number of documents scored, the few-shot count and the limit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_TASKS = Path(__file__).resolve().parent / "tasks"


class HarnessError(ValueError):
    """A harness run cannot go ahead (unknown task, unreadable dataset, lm-eval missing)."""


@dataclass(frozen=True, kw_only=True)
class HarnessConfig:
    """What to run: ``tasks`` (lm-eval task or group names), ``limit`` (documents per task; a
    float below 1 is a fraction; None: all), ``num_fewshot`` (None: each task's own), the batch
    size, extra task directories (``include_path``), the chat template, and the seed."""

    tasks: tuple[str, ...]
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: int = 8
    include_path: tuple[str, ...] = ()
    apply_chat_template: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict, repr=False)  # passed to simple_evaluate as is

    def __post_init__(self) -> None:
        if not self.tasks or any(not isinstance(t, str) or not t.strip() for t in self.tasks):
            raise ValueError(f"HarnessConfig.tasks needs task names, got {self.tasks!r}")
        if self.limit is not None and (not math.isfinite(self.limit) or self.limit <= 0):
            raise ValueError(f"HarnessConfig.limit must be > 0, got {self.limit}")
        if self.limit is not None and self.limit >= 1 and self.limit != int(self.limit):
            raise ValueError(f"HarnessConfig.limit above 1 counts documents, got {self.limit}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"HarnessConfig.num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.batch_size < 1:
            raise ValueError(f"HarnessConfig.batch_size must be >= 1, got {self.batch_size}")
        for path in self.include_path:
            if not Path(path).is_dir():
                raise ValueError(f"HarnessConfig.include_path: {path} is not a directory")


def _lm_eval():
    try:
        import lm_eval
    except ImportError as exc:
        raise HarnessError(
            "circuitviz harness needs lm-evaluation-harness: pip install 'circuitviz[harness]' "
            "(./run.sh installs it)"
        ) from exc
    return lm_eval


def resolve_tasks(config: HarnessConfig):
    """A task manager that knows every name of ``config.tasks`` (step 1); raises HarnessError
    naming the unknown ones."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    paths = [str(BUNDLED_TASKS), *config.include_path]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if any(name not in manager.all_tasks for name in config.tasks):
        manager = TaskManager(include_path=paths)
    unknown = [name for name in config.tasks if name not in manager.all_tasks]
    if unknown:
        bundled = TaskManager(include_path=str(BUNDLED_TASKS), include_defaults=False).all_tasks
        raise HarnessError(
            f"unknown harness task {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f": neither lm-eval's nor circuitviz's ({', '.join(sorted(bundled))}); "
            "`lm-eval ls tasks` lists lm-eval's, --include-path adds a directory of your own"
        )
    return manager


def run_harness(model, config: HarnessConfig, *, manager=None) -> dict[str, dict]:
    """Evaluate ``model`` (a ``LoadedModel``) on ``config.tasks``; see the module docstring.
    Returns ``{task: {"metrics": {...}, "stderr": {...}, "higher_is_better": {...}, "n": int,
    "num_fewshot": int, "limit": ..., "lm_eval": version}}``."""
    lm_eval = _lm_eval()
    from lm_eval.models.huggingface import HFLM

    from circuitviz.models.plain import plain_hf_model

    manager = manager if manager is not None else resolve_tasks(config)
    tokenizer = model.tokenizer
    padding_side = tokenizer.padding_side  # lm-eval may change it; the model keeps its own
    try:
        lm = HFLM(
            pretrained=plain_hf_model(model),
            tokenizer=tokenizer,
            batch_size=config.batch_size,
            device=str(model.device),
            max_length=model.info.n_ctx or None,
        )
        results: dict[str, dict] = {}
        for name in config.tasks:
            results.update(_one_task(lm_eval, lm, name, manager, config))
    finally:
        tokenizer.padding_side = padding_side
    return results


def _one_task(lm_eval, lm, name: str, manager, config: HarnessConfig) -> dict[str, dict]:
    try:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[name],
            task_manager=manager,
            limit=config.limit,
            num_fewshot=config.num_fewshot,
            apply_chat_template=config.apply_chat_template,
            log_samples=False,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
            **config.extra,
        )
    except (ConnectionError, OSError, FileNotFoundError) as exc:
        raise HarnessError(_dataset_message(name, exc)) from exc
    except Exception as exc:  # datasets raises its own types (DatasetNotFoundError, ...)
        if "dataset" in type(exc).__name__.lower() or "Hub" in str(exc):
            raise HarnessError(_dataset_message(name, exc)) from exc
        raise
    version = getattr(lm_eval, "__version__", None) or out.get("lm_eval_version")
    return {
        task: _task_record(out, task, config, version)
        for task in out["results"]
        if task in out.get("n-samples", {})  # a group's own aggregate row has no documents
    }


def _dataset_message(name: str, exc: BaseException) -> str:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return (
        f"harness task {name!r}: its dataset could not be loaded ({reason}). Offline, only "
        "tasks on local files run (circuitviz's own, or --include-path DIR with a task YAML), or "
        "hub datasets already in the datasets cache with HF_DATASETS_OFFLINE=1"
    )


def _task_record(out: dict, task: str, config: HarnessConfig, version) -> dict:
    metrics, stderr = {}, {}
    for key, value in out["results"][task].items():
        if "," not in key:
            continue  # name, alias, sample_len
        metric, _, filt = key.partition(",")
        is_stderr = metric.endswith("_stderr")
        metric = metric.removesuffix("_stderr")
        label = metric if filt == "none" else f"{metric}[{filt}]"
        number = value if isinstance(value, int | float) and math.isfinite(value) else None
        (stderr if is_stderr else metrics)[label] = number
    n = out["n-samples"][task]
    return {
        "metrics": metrics,
        "stderr": stderr,
        "higher_is_better": dict(out.get("higher_is_better", {}).get(task, {})),
        "n": int(n.get("effective", n.get("original", 0))),
        "num_fewshot": out.get("n-shot", {}).get(task),
        "limit": config.limit,
        "chat_template": config.apply_chat_template,
        "lm_eval": version,
    }
