"""The configuration of one circuit-tuning (or baseline) run.

Every option of the circuit-tuning loop (Li et al. 2025, arXiv:2502.06106, section 3 of
``shared/reference/circuit-tuning.md``) is a field here; the CLI and the app are the only places that
build one from user input. Field names are recorded verbatim in each run's ``config``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from circuitviz.attribution.config import BASELINES, METHOD_NAMES, METRIC_NAMES, POSITIONS

Method = Literal["circuit", "full", "random"]
Selection = Literal["top_n", "threshold", "node_weighted"]
TopNSchedule = Literal["linear", "cosine"]
Optimizer = Literal["sgd", "adamw"]
Loss = Literal["lm", "weighted"]

METHODS: tuple[str, ...] = ("circuit", "full", "random")
SELECTIONS: tuple[str, ...] = ("top_n", "threshold", "node_weighted")
SCHEDULES: tuple[str, ...] = ("linear", "cosine")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
LOSSES: tuple[str, ...] = ("lm", "weighted")


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """Options of one tuning run (see the module docstring).

    method: ``circuit`` (discover, select, update only the circuit's parameter slices), ``full``
        (plain fine-tuning of every parameter) or ``random`` (a random subgraph of ``top_n`` edges,
        redrawn every ``every`` steps: the control for circuit-tuning).
    top_n / threshold / selection: how a circuit is chosen from edge scores; ``node_weighted`` keeps
        ``top_n`` edges ranked by score times the strength of both endpoints.
    every: discover a new circuit every K steps (the paper's ``prune_every_k``).
    topn_schedule, topn_start, topn_warmup: N moves from ``topn_start`` to ``top_n`` over
        ``topn_warmup`` steps, linearly or on a half cosine, then stays at ``top_n``.
    attribution, baseline, positions, ig_steps, metric: how edges are scored (see
        ``circuitviz.attribution``).
    paper_graph: the paper's graph (no input and logits nodes) instead of the EAP-IG one.
    layer0_qkv: always train layer 0's q/k/v slices too (the paper's ``--use_layer0_qkv``).
    random_ratio, random_seed: additionally keep this fraction of the nodes outside the step-0
        circuit trainable for the whole run (the paper's random activation).
    answer_swap: probability with which a training sentence's answer token is replaced by the
        contrasting one (0.5 gives balanced data, as the paper's balanced corpus for de-biasing).
    loss, target_weight: ``lm`` is the mean next-token loss over the training text; ``weighted``
        multiplies the answer token's loss by ``target_weight`` (and normalises by the weights).
    debias_beta: adds ``beta * |mean logit(answer) - logit(wrong)|`` at the target position.
    circuit_forward: run training forwards with every edge outside the circuit mean-ablated
        (off by default: as in the paper the circuit only restricts which parameters move).
    eval_every, snapshot_every, checkpoint_every: E, S and C in steps (0 = only at the end).
    """

    method: Method = "circuit"
    selection: Selection = "top_n"
    top_n: int = 200
    threshold: float | None = None
    every: int = 1
    topn_schedule: TopNSchedule | None = None
    topn_start: int | None = None
    topn_warmup: int = 0
    attribution: str = "eap"
    baseline: str = "corrupted"
    positions: str = "target"
    ig_steps: int = 5
    metric: str = "logit_diff"
    paper_graph: bool = False
    layer0_qkv: bool = False
    random_ratio: float = 0.0
    random_seed: int = 0
    optimizer: Optimizer = "sgd"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    batch_size: int = 16
    steps: int | None = 800
    epochs: int | None = None
    grad_clip: float | None = None
    loss: Loss = "lm"
    target_weight: float = 1.0
    answer_swap: float = 0.0
    debias_beta: float = 0.0
    circuit_forward: bool = False
    eval_every: int = 50
    snapshot_every: int = 50
    checkpoint_every: int = 100
    n_train: int = 2048
    n_dev: int = 256
    n_probe: int = 32
    n_heldout: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("selection", self.selection, SELECTIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        _choice("attribution", self.attribution, METHOD_NAMES)
        _choice("baseline", self.baseline, BASELINES)
        _choice("positions", self.positions, POSITIONS)
        _choice("metric", self.metric, METRIC_NAMES)
        if self.topn_schedule is not None:
            _choice("topn_schedule", self.topn_schedule, SCHEDULES)
        for name in ("top_n", "every", "ig_steps", "batch_size", "n_train", "n_dev", "n_probe"):
            _at_least(name, getattr(self, name), 1)
        for name in ("topn_warmup", "warmup_steps", "eval_every", "snapshot_every"):
            _at_least(name, getattr(self, name), 0)
        _at_least("checkpoint_every", self.checkpoint_every, 0)
        _at_least("n_heldout", self.n_heldout, 1)
        if self.topn_start is not None:
            _at_least("topn_start", self.topn_start, 1)
        if self.topn_schedule is not None and (self.topn_start is None or self.topn_warmup < 1):
            raise ValueError(
                f"TuneConfig.topn_schedule={self.topn_schedule!r} needs topn_start and "
                f"topn_warmup >= 1, got topn_start={self.topn_start}, topn_warmup={self.topn_warmup}"
            )
        if self.selection == "threshold" and self.threshold is None:
            raise ValueError("TuneConfig.threshold must be set when selection='threshold'")
        if self.threshold is not None:
            _finite("threshold", self.threshold)
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"TuneConfig: give exactly one of steps and epochs, got steps={self.steps}, "
                f"epochs={self.epochs}"
            )
        if self.steps is not None:
            _at_least("steps", self.steps, 1)
        if self.epochs is not None:
            _at_least("epochs", self.epochs, 1)
        _positive("lr", self.lr)
        _in_range("momentum", self.momentum, 0.0, 1.0, closed_high=False)
        _in_range("weight_decay", self.weight_decay, 0.0, math.inf)
        _in_range("random_ratio", self.random_ratio, 0.0, 1.0)
        _in_range("answer_swap", self.answer_swap, 0.0, 1.0)
        _in_range("debias_beta", self.debias_beta, 0.0, math.inf)
        _positive("target_weight", self.target_weight)
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)
        if self.circuit_forward and self.method == "full":
            raise ValueError(
                "TuneConfig.circuit_forward needs a circuit: method 'circuit' or 'random'"
            )

    @property
    def discovers(self) -> bool:
        """Whether the run picks a subgraph (circuit or random) rather than training everything."""
        return self.method != "full"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TuneConfig:
        """Rebuild from ``to_dict`` output (a stored run's config); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TuneConfig: unknown fields {unknown}")
        return cls(**values)


def _choice(name: str, value, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"TuneConfig.{name} must be one of {list(options)}, got {value!r}")


def _at_least(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"TuneConfig.{name} must be an integer >= {low}, got {value!r}")


def _finite(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"TuneConfig.{name} must be a finite number, got {value!r}")


def _positive(name: str, value) -> None:
    _finite(name, value)
    if value <= 0:
        raise ValueError(f"TuneConfig.{name} must be > 0, got {value!r}")


def _in_range(name: str, value, low: float, high: float, *, closed_high: bool = True) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"TuneConfig.{name} must be a number, got {value!r}")
    above = value > high if closed_high else value >= high
    if value < low or above:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"TuneConfig.{name} must be in [{low}, {high}{bracket}, got {value!r}")
