"""Box colours: a kind's colour mixed with white, the label colour on a fill, and boxes coloured
by an analysis of ``circuitviz analyse`` (``NodeValues``: DLA, a role's score) at a step.

``scene.build_scene`` uses these; the browser renderer (``web/circuit.js``: ``mixWhite``,
``labelColor``, ``valueFills``) repeats them exactly, and the browser test holds it to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from circuitviz.plotting import style as S

FILL_LEVELS = 5  # strength shades per colour (so a figure has few distinct fills)


@dataclass(frozen=True, eq=False)
class NodeValues:
    """One analysis's value of every box at each step ``circuitviz analyse`` measured, to colour
    the boxes by (``rundata.node_values`` reads it from a run). A box's colour strength is
    ``|value| / scale`` (its square root when ``sqrt``: DLA is heavy-tailed), in ``FILL_LEVELS``
    steps; its hue the value's sign for ``dla``, one purple for a role."""

    mode: str  # "dla" or a role of style.ROLE_LABELS
    steps: np.ndarray  # [n_steps] int, ascending
    values: np.ndarray  # [n_steps, n_nodes] float32; NaN where the analysis has no value
    scale: float  # |value| drawn at full colour (> 0)
    sqrt: bool

    def __post_init__(self) -> None:
        if self.mode not in S.NODE_COLOR_LABELS:
            raise ValueError(f"no box colouring {self.mode!r}; choose from {S.NODE_COLORS[1:]}")
        if not len(self.steps) or self.values.shape[0] != len(self.steps):
            raise ValueError("node values need one row per analysed step, and at least one step")
        if not self.scale > 0:
            raise ValueError(f"the full-colour scale must be positive, got {self.scale!r}")

    def row_at(self, step: float) -> int:
        """The row of the latest analysed step at or before ``step`` (the weights the run held
        then), or the first row for a step before every analysed one."""
        return max(int(np.searchsorted(self.steps, step, side="right")) - 1, 0)


def mix_white(color: str, t: float) -> str:
    """``color`` (#rrggbb) at strength ``t`` over white; channels rounded half up."""
    channels = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    mixed = [int(np.floor(255 + (c - 255) * t + 0.5)) for c in channels]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def value_fills(values: NodeValues, row: np.ndarray) -> tuple[str, ...]:
    """Each box's fill by its analysis value ``row`` (one entry per box): ``dla`` in blue
    (towards the answer) or vermillion (towards the wrong token), a role's score in purple, at a
    strength of ``|value| / scale`` (square-rooted when ``values.sqrt``) rounded to
    ``FILL_LEVELS`` steps over white; a box without a value grey."""
    fills = []
    for value in row.tolist():
        if value != value:  # NaN: the analysis says nothing about this box
            fills.append(S.NO_VALUE_FILL)
            continue
        ratio = min(abs(value) / values.scale, 1.0)
        if values.sqrt:
            ratio = math.sqrt(ratio)
        level = math.floor(ratio * FILL_LEVELS + 0.5) / FILL_LEVELS
        if values.mode == "dla":
            color = S.HELPS if value > 0 else S.HURTS
        else:
            color, level = S.ROLE_FILL, level if value > 0 else 0.0
        fills.append(mix_white(color, level))
    return tuple(fills)


def label_color(fill: str) -> str:
    """White text on a dark ``fill`` (#rrggbb; luma below half, in integer arithmetic so that the
    browser renderer decides alike), else dark grey."""
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 299 * r + 587 * g + 114 * b < 127_500 else "#333333"
