"""How edges are scored (``AttributionConfig``) and the sign convention every score follows.

This module imports no torch, so the CLI derives its flags from it without loading the engine;
the scores themselves are ``circuitviz.attribution.scores.EdgeScores``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from circuitviz.graph.selection import SelectionConfig
from circuitviz.graph.sign import SIGN_CONVENTION  # noqa: F401  (re-exported: the sign in words)
from circuitviz.options import check_options, normalise_choices, option, option_specs

Method = Literal["eap", "eap-ig-inputs", "eap-ig-activations"]
Baseline = Literal["corrupted", "mean", "zero"]
Positions = Literal["all", "target"]
IGRule = Literal["left", "right"]
MetricName = Literal["logit_diff", "logprob_diff", "answer_loss", "process", "outcome"]
SFT_METRIC_NAMES: tuple[str, ...] = ("process", "outcome")
PAIR_METRIC_NAMES: tuple[str, ...] = ("logit_diff", "logprob_diff", "answer_loss")


def check_sft_choices(owner: str, metric: str, baseline: str, positions: str) -> None:
    """An SFT metric needs what an SFT task has: no corrupted prompt, no single target position."""
    if metric not in SFT_METRIC_NAMES:
        return
    pair = f"on a pair task, use a pair metric ({', '.join(PAIR_METRIC_NAMES)}) instead"
    if baseline == "corrupted":
        raise ValueError(
            f"{owner}.baseline 'corrupted' needs a corrupted prompt, which instruction (SFT) tasks "
            f"do not have, and metric {metric!r} is an instruction task's: with it use baseline "
            f"'mean' or 'zero'; {pair}"
        )
    if positions == "target":
        raise ValueError(
            f"{owner}.positions 'target' is a pair task's one answer position; metric {metric!r} "
            f"reads an instruction task's many response tokens: with it use positions 'all'; {pair}"
        )


def check_batch(batch, metric: str, baseline: str, *, custom_metric: bool = False) -> None:
    """Refuse, with the fix, a metric or baseline the batch's kind cannot serve."""
    sft = getattr(batch, "labels", None) is not None
    if sft and baseline == "corrupted":
        raise ValueError(
            "instruction (SFT) tasks have no corrupted prompt, so the 'corrupted' baseline does not "
            "apply: use baseline 'mean' or 'zero' (and metric 'process' or 'outcome')"
        )
    if custom_metric:
        return
    if sft and metric not in SFT_METRIC_NAMES:
        raise ValueError(
            f"metric {metric!r} reads a pair task's answer and wrong tokens; an instruction (SFT) "
            f"task is scored with {SFT_METRIC_NAMES[0]!r} (mean response loss) or "
            f"{SFT_METRIC_NAMES[1]!r} (log-probability of the final answer)"
        )
    if not sft and metric in SFT_METRIC_NAMES:
        raise ValueError(
            f"metric {metric!r} is for instruction (SFT) tasks; a pair task is scored with "
            f"{', '.join(PAIR_METRIC_NAMES)}"
        )


BASELINE_DEFINITIONS = {
    "corrupted": "each source's activation on the example's own corrupted prompt, position by "
    "position",
    "mean": "each source's activation averaged over every real (non-padding) token of every "
    "example attributed (all batches of the call; one batch when tuning), one vector per source "
    "used at every position; EAP-IG's reference computes its mean differently, so mean-baseline "
    "scores are not comparable across tools",
    "zero": "a zero vector for every source",
}


@dataclass(frozen=True, kw_only=True)
class AttributionConfig:
    """How to score edges (see ``circuitviz.attribution.eap`` for the algorithm).

    >>> import circuitviz as cv
    >>> config = cv.AttributionConfig(method="eap-ig", ig_steps=5)
    >>> config.method, config.alphas()
    ('eap-ig-inputs', (0.0, 0.2, 0.4, 0.6, 0.8))
    """

    method: Method = option(
        "eap",
        flag="--attribution",
        aliases={"eap-ig": "eap-ig-inputs"},
        help="eap: the gradient at the clean input; eap-ig-inputs (alias eap-ig): gradients "
        "averaged over inputs interpolated between the baseline and the clean embeddings; "
        "eap-ig-activations: every source activation interpolated",
    )
    baseline: Baseline = option(
        "corrupted",
        help="the value an ablated activation takes: the corrupted prompt's, the mean over the "
        "data's real tokens (per node and position-independent), or zero",
    )
    positions: Positions = option(
        "all",
        help="sum scores over every real token (all) or only the position the metric reads (target)",
    )
    metric: MetricName = option(
        "logit_diff",
        help="pair tasks: logit_diff = logit(answer) - logit(wrong), logprob_diff (the same through "
        "log-softmax) or answer_loss (cross-entropy of the answer); instruction (SFT) tasks: "
        "process (mean loss on the response tokens) or outcome (log-probability of the final "
        "answer), with the mean or zero baseline over all positions",
    )
    ig_steps: int = option(5, low=1, help="EAP-IG interpolation steps (ignored by eap)")
    ig_rule: IGRule = option(
        "left",
        help="EAP-IG points alpha = k/m: left takes k = 0..m-1 (the reference EAP-IG used by MIB, "
        "since Feb 2025), right takes k = 1..m (the reference before Feb 2025, circuitviz before "
        "0.2); large edges differ by up to ~13% between them at m = 5",
    )

    def __post_init__(self) -> None:
        normalise_choices(self)
        check_options(self)
        check_sft_choices("AttributionConfig", self.metric, self.baseline, self.positions)

    @property
    def n_steps(self) -> int:
        """Gradient points per batch: 1 for EAP, ``ig_steps`` for EAP-IG."""
        return 1 if self.method == "eap" else self.ig_steps

    def alphas(self) -> tuple[float, ...]:
        """The interpolation points whose gradients are averaged (1.0 is the clean input)."""
        m = self.n_steps
        if self.method == "eap":
            return (1.0,)
        first = 0 if self.ig_rule == "left" else 1
        return tuple(k / m for k in range(first, first + m))

    def describe(self) -> dict:
        return {
            "method": self.method,
            "baseline": self.baseline,
            "positions": self.positions,
            "metric": self.metric,
            "ig_steps": self.n_steps,
            "ig_rule": None if self.method == "eap" else self.ig_rule,
            "ig_alphas": list(self.alphas()),
            "baseline_definition": BASELINE_DEFINITIONS[self.baseline],
            "sign": SIGN_CONVENTION,
        }


def _choices(name: str) -> tuple[str, ...]:
    return next(spec.choices for spec in option_specs(AttributionConfig) if spec.name == name)


METHOD_NAMES: tuple[str, ...] = _choices("method")
BASELINES: tuple[str, ...] = _choices("baseline")
POSITIONS: tuple[str, ...] = _choices("positions")
METRIC_NAMES: tuple[str, ...] = _choices("metric")


# What ``discover`` scores with unless told otherwise: EAP-IG over every position, closer to exact
# patching than EAP (``circuitviz discover`` runs once, so it can afford the extra passes).
DISCOVER_ATTRIBUTION = AttributionConfig(method="eap-ig-inputs", positions="all")
Split = Literal["train", "dev", "test", "all"]


@dataclass(frozen=True, kw_only=True)
class DiscoverConfig:
    """One circuit discovery: score every edge on a task's examples, select a circuit, and measure
    its faithfulness on held-out examples against a random circuit of the same size.

    >>> import circuitviz as cv
    >>> config = cv.DiscoverConfig(selection=cv.SelectionConfig(top_n=50), n_examples=32)
    >>> config.attribution.method, config.selection.top_n
    ('eap-ig-inputs', 50)
    """

    attribution: AttributionConfig = option(
        default_factory=lambda: DISCOVER_ATTRIBUTION, help="how edges are scored"
    )
    selection: SelectionConfig = option(
        default_factory=SelectionConfig, help="how the circuit is chosen"
    )
    keep_dead_ends: bool = option(
        False,
        help="keep edges on no input -> logits path; by default they are removed from the "
        "circuit before it is saved and measured, as the reference EAP-IG/MIB evaluation does",
    )
    paper_graph: bool = option(False, help="the circuit-tuning paper's graph: no input/logits")
    mlp_groups: int | None = option(
        None,
        low=1,
        metavar="G",
        help="split every MLP into G groups of neurons, each its own node (m{L}.g{j})",
    )
    n_examples: int = option(
        64, low=1, flag=("-n", "--n-examples"), help="examples drawn per split"
    )
    split: Split = option("train", help="the split edges are scored on")
    eval_split: Split = option("dev", help="the split faithfulness is measured on")
    batch_size: int = option(16, low=1, help="examples per forward pass")
    seed: int = option(0, help="which examples are drawn, and the random circuit")
    sweep: bool = option(False, help="also report MIB's CPR and CMD over edge budgets")

    def __post_init__(self) -> None:
        check_options(self)

    @classmethod
    def defaults_for(cls, task: str) -> list[dict]:
        """What the task's kind changes (an instruction task scores with its own loss, mean
        ablated): ``circuitviz.tasks.catalog.KIND_TUNE_DEFAULTS``, as tuning uses it."""
        from circuitviz.tasks.catalog import KIND_TUNE_DEFAULTS, task_kind

        try:
            kind = task_kind(task)
        except ValueError:  # reported, with the choices, when the task's data loads
            return []
        attribution = KIND_TUNE_DEFAULTS[kind].get("attribution")
        return [{"attribution": dict(attribution)}] if attribution else []
