"""Colours, fonts and sizes shared by the interactive (plotly) and static (matplotlib) figures.

Node colours follow the circuit-tuning paper (heads ``#f5daab``, MLPs ``#8ad088``). Edge colours use
the Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies and
on a washed-out projector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HEAD_FILL = "#f5daab"
MLP_FILL = "#8ad088"
KV_FILL = "#c9a66b"  # a key/value group shared by several query heads (grouped-query attention)
END_FILL = "#d9d9d9"  # input and logits
IDLE_FILL = "#ffffff"  # a node no visible edge touches
NODE_LINE = "#7f7f7f"
CIRCUIT_LINE = "#222222"  # outline of nodes the run's own circuit trains
HIGHLIGHT_LINE = "#000000"

# Edge colours by sign (Okabe-Ito blue / vermillion). Scores follow the attribution module's
# convention, score ~ m(edge patched) - m(clean): a negative edge raises the task metric on clean
# inputs (it helps the correct answer), a positive one lowers it.
HELPS = "#0072B2"
HURTS = "#D55E00"
HELPS_LABEL = "score < 0: helps the answer"
HURTS_LABEL = "score > 0: works against it"
FADED = "#c8c8c8"
DOTTED_SAMPLE = "#555555"  # the legend's sample of a dotted edge

# Edge colours by the kind of reader the edge enters.
TARGET_COLORS = {
    "q": "#E69F00",  # orange
    "k": "#56B4E9",  # sky blue
    "v": "#009E73",  # bluish green
    "mlp": "#CC79A7",  # reddish purple
    "logits": "#000000",
}
TARGETS = tuple(TARGET_COLORS)

# Circuit-diff categories, in drawing order (the last is drawn on top).
DIFF_COLORS = {
    "unchanged": "#9e9e9e",
    "noise": "#dddddd",
    "weakened": "#56B4E9",
    "strengthened": "#0072B2",
    "removed": "#D55E00",
    "added": "#009E73",
    "flipped": "#CC79A7",
}
DIFF_LABELS = {
    "unchanged": "unchanged",
    "noise": "change inside the noise floor",
    "weakened": "weakened",
    "strengthened": "strengthened",
    "removed": "removed (only in A)",
    "added": "added (only in B)",
    "flipped": "sign flipped",
}

# A qualitative cycle for several runs on one plot (Okabe-Ito without yellow, then greys).
RUN_COLORS = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#999999",
)

ColorBy = Literal["sign", "target"]

# Boxes coloured by an analysis of ``circuitviz analyse`` instead of by their kind: direct logit
# attribution (towards the answer in HELPS' blue, towards the wrong token in HURTS' vermillion) or
# one attention role's score (the ``analysis.roles`` detectors), on a white-to-purple scale.
ROLE_LABELS = {
    "previous_token": "previous-token",
    "duplicate_token": "duplicate-token",
    "induction": "induction",
    "copying": "copying",
}
NODE_COLORS = ("kind", "dla", *ROLE_LABELS)
NodeColor = Literal["kind", "dla", "previous_token", "duplicate_token", "induction", "copying"]
ROLE_FILL = "#7B3294"
NO_VALUE_FILL = "#eeeeee"  # a box the analysis says nothing about (the logits, a key/value bar)
NODE_COLOR_LABELS = {
    "dla": ("box DLA > 0", "box DLA < 0"),  # > 0: the box pushes the answer over the wrong token
    **{role: (f"box {label} score",) for role, label in ROLE_LABELS.items()},
}


@dataclass(frozen=True, kw_only=True)
class FigureStyle:
    """Sizes for a screen or a projector. ``presentation()`` makes every text and line larger."""

    font_size: int = 13
    label_size: int = 10
    title_size: int = 16
    line_scale: float = 1.0
    px_per_layer: int = 62
    min_height: int = 460
    font_family: str = "Helvetica, Arial, sans-serif"

    def __post_init__(self) -> None:
        for name in ("font_size", "label_size", "title_size", "px_per_layer", "min_height"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.line_scale <= 0:
            raise ValueError(f"line_scale must be positive, got {self.line_scale!r}")

    @classmethod
    def presentation(cls) -> FigureStyle:
        return cls(
            font_size=20,
            label_size=14,
            title_size=24,
            line_scale=1.6,
            px_per_layer=80,
            min_height=620,
        )


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]
