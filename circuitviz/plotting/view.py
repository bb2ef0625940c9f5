"""The state of a dashboard view: which run, step, cut-off, selection and comparison it shows.

One ``ViewState`` round-trips through the URL's query string (so a view can be shared and reloaded)
and through a JSON file (so ``circuitviz export --view FILE`` and the dashboard reopen the same view).

Steps are named by *step tokens*: ``"before"`` and ``"after"`` for the run's first and final
circuits, and the step number (``"120"``) for a snapshot taken during tuning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

import pandas as pd

from circuitviz.plotting import style as S

VIEW_VERSION = 1
COLOR_BY = ("sign", "target")
COMPARE_MODES = ("overlay", "side")
NODE_COLORS = S.NODE_COLORS


@dataclass(frozen=True, kw_only=True)
class ViewState:
    """``top_n=None`` shows every edge above ``threshold``; ``compare`` is step A when comparing
    (``step`` is B); ``node`` is the selected box (``a3.h1``, ``m2``, ``a3.kv0``, ``input``,
    ``logits``); ``focus`` shows only the paths through it; ``collapse`` shrinks layers that no
    shown edge touches; ``node_color`` fills boxes by their kind, or by an analysis of
    ``circuitviz analyse`` (``dla``, or a role's score) at the latest analysed step at or before
    ``step``."""

    run: str | None = None
    step: str | None = None
    threshold: float = 0.0
    top_n: int | None = 100
    node: str | None = None
    compare: str | None = None
    compare_mode: Literal["overlay", "side"] = "overlay"
    color_by: Literal["sign", "target"] = "sign"
    node_color: S.NodeColor = "kind"
    only_circuit: bool = False
    focus: bool = False
    collapse: bool = False
    task: str | None = None
    overlay: tuple[str, ...] = ()
    presentation: bool = False

    def __post_init__(self) -> None:
        if not (self.threshold >= 0):  # also rejects NaN
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be >= 1 or None (all edges), got {self.top_n!r}")
        if self.color_by not in COLOR_BY:
            raise ValueError(f"color_by must be one of {COLOR_BY}, got {self.color_by!r}")
        if self.node_color not in NODE_COLORS:
            raise ValueError(f"node_color must be one of {NODE_COLORS}, got {self.node_color!r}")
        if self.compare_mode not in COMPARE_MODES:
            raise ValueError(
                f"compare_mode must be one of {COMPARE_MODES}, got {self.compare_mode!r}"
            )
        for name in ("step", "compare"):
            token = getattr(self, name)
            if token is not None:
                check_step_token(token, field_name=name)
        if not isinstance(self.overlay, tuple):
            raise ValueError(f"overlay must be a tuple of run ids, got {self.overlay!r}")

    def with_(self, **changes) -> ViewState:
        return replace(self, **changes)

    # ---- URL ----------------------------------------------------------------------------------

    def to_query(self) -> dict[str, str]:
        """Query-string parameters for the fields that differ from the defaults."""
        default = ViewState()
        out: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value == getattr(default, item.name):
                continue
            if isinstance(value, bool):
                out[item.name] = "1" if value else "0"
            elif isinstance(value, tuple):
                out[item.name] = ",".join(value)
            elif value is None:
                out[item.name] = "all" if item.name == "top_n" else ""
            else:
                out[item.name] = f"{value:g}" if isinstance(value, float) else str(value)
        return out

    @classmethod
    def from_query(cls, query: dict[str, str]) -> tuple[ViewState, list[str]]:
        """(view, problems): a bad parameter is dropped (its default kept) and described, so a
        mistyped link still opens."""
        view, problems = cls(), []
        for item in fields(cls):
            if item.name not in query:
                continue
            raw = str(query[item.name])
            try:
                view = replace(view, **{item.name: _parse_field(item.name, raw)})
            except ValueError as exc:
                problems.append(f"ignored {item.name}={raw!r}: {exc}")
        return view, problems

    # ---- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        payload = {"circuitviz_view": VIEW_VERSION, **asdict(self)}
        payload["overlay"] = list(self.overlay)
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ViewState:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a view file must be JSON: {exc}") from exc
        if not isinstance(payload, dict) or "circuitviz_view" not in payload:
            raise ValueError("not a circuitviz view file (no 'circuitviz_view' key)")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(payload) - known - {"circuitviz_view"})
        if unknown:
            raise ValueError(f"unknown fields in view file: {', '.join(unknown)}")
        values = {key: value for key, value in payload.items() if key in known}
        if "overlay" in values:
            values["overlay"] = tuple(values["overlay"])
        return cls(**values)


def save_view(view: ViewState, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(view.to_json())
    return path


def load_view(path: str | Path) -> ViewState:
    return ViewState.from_json(Path(path).read_text())


def _parse_field(name: str, raw: str):
    if name == "threshold":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    if name == "top_n":
        if raw in ("", "all"):
            return None
        if not raw.isdigit():
            raise ValueError("not a whole number or 'all'")
        return int(raw)
    if name in ("only_circuit", "presentation", "focus", "collapse"):
        if raw not in ("0", "1", "true", "false"):
            raise ValueError("not 0 or 1")
        return raw in ("1", "true")
    if name == "overlay":
        return tuple(part for part in raw.split(",") if part)
    return raw or None


# ---- step tokens -------------------------------------------------------------------------------


def check_step_token(token: str, *, field_name: str = "step") -> str:
    if token in ("before", "after") or (token.isdigit() and len(token) < 10):
        return token
    raise ValueError(f"{field_name} must be 'before', 'after' or a step number, got {token!r}")


def step_tokens(snapshots: pd.DataFrame) -> list[str]:
    """One token per snapshot row (``Run.snapshots()`` order: before, during by step, after)."""
    return [
        label if label in ("before", "after") else str(int(step))
        for label, step in zip(snapshots["label"], snapshots["step"])
    ]


def token_label(token: str, snapshots: pd.DataFrame) -> str:
    """What a slider shows for a token: ``before``, ``step 120``, ``after (step 400)``."""
    if token == "before":
        return "before"
    if token == "after":
        steps = snapshots.loc[snapshots["label"] == "after", "step"]
        return f"after (step {int(steps.iloc[0])})" if len(steps) else "after"
    return f"step {token}"


def nearest_token(snapshots: pd.DataFrame, token: str) -> str:
    """The run's step token nearest ``token`` (by step number; "before"/"after" when the run has
    them, else its first/last), for "showing the nearest" messages."""
    tokens = step_tokens(snapshots)
    if not tokens:
        raise KeyError("this run has no circuit snapshots yet")
    if token in tokens:
        return token
    if token == "before":
        return tokens[0]
    if token == "after" or not token.isdigit():
        return tokens[-1]
    steps = snapshots["step"].to_numpy(dtype=float)
    return tokens[int(abs(steps - int(token)).argmin())]


def resolve_token(snapshots: pd.DataFrame, token: str | None) -> int:
    """Row position in ``snapshots`` of ``token``; None means the last row (the newest circuit).
    KeyError (listing the run's tokens) when the run has no such snapshot."""
    tokens = step_tokens(snapshots)
    if not tokens:
        raise KeyError("this run has no circuit snapshots yet")
    if token is None:
        return len(tokens) - 1
    if token not in tokens:
        shown = ", ".join(tokens[:12]) + (" ..." if len(tokens) > 12 else "")
        raise KeyError(f"this run has no snapshot at step {token!r}; it has {shown}")
    return tokens.index(token)
