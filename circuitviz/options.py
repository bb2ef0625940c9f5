"""Configuration fields declared once: default, help text, choices and bounds.

Every user-facing config (``AttributionConfig``, ``TuneConfig``, ``DiscoverConfig``, ...) is a frozen,
keyword-only dataclass whose fields are made with ``option(...)``. From that one declaration:

* ``check_options(config)`` validates every field (choices from the ``Literal`` annotation, numeric
  bounds, finiteness) and raises ``ValueError("<Config>.<field> must ..., got <value>")``;
* legacy spellings of a choice (``top_n`` for ``top-n``) are normalised on the way in, so runs stored
  by earlier versions still load;
* the command line (``circuitviz.cli.flags``) derives each flag, its choices, its type and its help
  text, with the default shown, so adding an option is one line here.

This module imports no torch: the CLI's ``--help`` and the dashboard read configs without the engine.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from functools import cache
from types import UnionType
from typing import Any, Literal

MISSING = dataclasses.MISSING


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    flag: str | tuple[str, ...] | None = None,
    aliases: Mapping[str, str] | None = None,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with what validation and the CLI need.

    ``flag``: the command-line flag (or flags, the first shown in messages) when it is not
    ``--<field-name-with-hyphens>``. ``aliases``: other
    accepted spellings of a choice (``{"eap-ig": "eap-ig-inputs"}``). ``low``/``high``: inclusive
    bounds (exclusive with ``open_low`` / ``open_high``). ``cli=False`` keeps a field off the command line.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": dict(aliases or {}),
        "low": low,
        "high": high,
        "open_low": open_low,
        "open_high": open_high,
        "metavar": metavar,
        "cli": cli,
    }
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One field of a config as the validator and the CLI see it."""

    name: str
    help: str
    kind: type | None  # int, float, str, bool, or a nested config class
    choices: tuple[str, ...] | None
    optional: bool  # None is a valid value
    aliases: Mapping[str, str]
    low: float | None
    high: float | None
    open_low: bool
    open_high: bool
    flag: str | tuple[str, ...] | None
    metavar: str | None
    cli: bool

    @property
    def is_config(self) -> bool:
        return self.kind is not None and dataclasses.is_dataclass(self.kind)


@cache
def option_specs(cls: type) -> tuple[OptionSpec, ...]:
    """The fields of a config class, with types resolved from its annotations."""
    hints = typing.get_type_hints(cls)
    specs = []
    for item in dataclasses.fields(cls):
        kind, choices, optional = _resolve(hints[item.name])
        meta = item.metadata
        specs.append(
            OptionSpec(
                name=item.name,
                help=meta.get("help", ""),
                kind=kind,
                choices=choices,
                optional=optional,
                aliases=meta.get("aliases", {}),
                low=meta.get("low"),
                high=meta.get("high"),
                open_low=meta.get("open_low", False),
                open_high=meta.get("open_high", False),
                flag=meta.get("flag"),
                metavar=meta.get("metavar"),
                cli=meta.get("cli", True),
            )
        )
    return tuple(specs)


def _resolve(annotation) -> tuple[type | None, tuple[str, ...] | None, bool]:
    """(base type, choices of a Literal, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        kind, choices, _ = _resolve(args[0]) if len(args) == 1 else (None, None, False)
        return kind, choices, True
    if origin is Literal:
        values = typing.get_args(annotation)
        return type(values[0]), tuple(values), False
    return (annotation if isinstance(annotation, type) else None), None, False


def normalise_choices(config) -> None:
    """Replace legacy spellings of choices by the canonical ones (call first in ``__post_init__``)."""
    for spec in option_specs(type(config)):
        value = getattr(config, spec.name)
        if spec.aliases and isinstance(value, str) and value in spec.aliases:
            object.__setattr__(config, spec.name, spec.aliases[value])


def check_options(config) -> None:
    """Validate every field of ``config`` against its declaration; ValueError naming the field."""
    owner = type(config).__name__
    for spec in option_specs(type(config)):
        value = getattr(config, spec.name)
        where = f"{owner}.{spec.name}"
        if value is None:
            if not spec.optional:
                raise ValueError(f"{where} must be set, got None")
            continue
        if spec.is_config:
            if not isinstance(value, spec.kind):
                raise ValueError(f"{where} must be a {spec.kind.__name__}, got {value!r}")
        elif spec.choices is not None:
            if value not in spec.choices:
                raise ValueError(f"{where} must be one of {list(spec.choices)}, got {value!r}")
        elif spec.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be true or false, got {value!r}")
        elif spec.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where} must be an integer, got {value!r}")
            _check_bounds(where, spec, value)
        elif spec.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{where} must be a finite number, got {value!r}")
            _check_bounds(where, spec, value)


def _check_bounds(where: str, spec: OptionSpec, value: float) -> None:
    what = "an integer" if spec.kind is int else "a number"
    low = spec.low is not None and (value <= spec.low if spec.open_low else value < spec.low)
    high = spec.high is not None and (value >= spec.high if spec.open_high else value > spec.high)
    if not (low or high):
        return
    parts = []
    if spec.low is not None:
        parts.append(f"{'>' if spec.open_low else '>='} {spec.low:g}")
    if spec.high is not None:
        parts.append(f"{'<' if spec.open_high else '<='} {spec.high:g}")
    raise ValueError(f"{where} must be {what} {' and '.join(parts)}, got {value!r}")


def config_from_dict(cls: type, values: Mapping[str, Any]):
    """Rebuild a config from ``dataclasses.asdict`` output (a stored run's config), nested configs
    included; an unknown key is an error naming it."""
    specs = {spec.name: spec for spec in option_specs(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    built = {}
    for name, value in values.items():
        spec = specs[name]
        if spec.is_config and isinstance(value, Mapping):
            value = config_from_dict(spec.kind, value)
        built[name] = value
    return cls(**built)
