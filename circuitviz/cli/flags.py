"""Command-line flags derived from config fields, and configs built back from parsed flags.

A config's fields (``circuitviz.options.option``) carry their help, choices, bounds and flag name;
``add_config_flags`` turns each into one argparse option whose help shows the default (and, for
tuning, the tasks that change it). Every flag defaults to None so that a value the user did not
give never overrides a task's default; ``build_config`` layers: the config's defaults, then the
task's, then the user's. A nested config (``TuneConfig.attribution``) contributes its own fields'
flags. Errors from the config name the flag (``--top-n``), not the field.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from circuitviz.options import OptionSpec, config_from_dict, option_specs

Groups = Mapping[str, str]  # field name -> argument group title


def flags_of(spec: OptionSpec) -> tuple[str, ...]:
    if spec.flag is None:
        return ("--" + spec.name.replace("_", "-"),)
    return (spec.flag,) if isinstance(spec.flag, str) else tuple(spec.flag)


def flag_of(spec: OptionSpec) -> str:
    """The flag messages name (the first of a field's flags)."""
    return flags_of(spec)[0]


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    defaults: Any,
    *,
    groups: Groups | None = None,
    skip: tuple[str, ...] = (),
    extra_defaults: Callable[[str], str] | None = None,
    prefix: str = "",
) -> None:
    """One flag per field of ``cls`` (recursing into nested configs), help showing the default
    taken from the instance ``defaults``. ``extra_defaults(dotted_name)`` may add a note such as
    "gender-pronoun: 50". ``groups`` puts fields into argument groups (others go in the parser)."""
    titled: dict[str, argparse._ArgumentGroup] = {}
    for spec in option_specs(cls):
        if not spec.cli or spec.name in skip:
            continue
        dotted = prefix + spec.name
        default = getattr(defaults, spec.name)
        if spec.is_config:
            add_config_flags(
                parser,
                spec.kind,
                default,
                groups=groups,
                skip=skip,
                extra_defaults=extra_defaults,
                prefix=dotted + ".",
            )
            continue
        title = (groups or {}).get(dotted)
        target = parser
        if title is not None:
            if title not in titled:
                titled[title] = _group(parser, title)
            target = titled[title]
        _add_flag(target, spec, dotted, default, extra_defaults)


def _group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def _add_flag(target, spec: OptionSpec, dest: str, default, extra_defaults) -> None:
    shown = _shown(default)
    note = extra_defaults(dest) if extra_defaults is not None else ""
    default_text = f"default: {shown}" + (f"; {note}" if note else "")
    help_text = f"{spec.help} ({default_text})".replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if spec.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        kwargs.pop("metavar", None)
    elif spec.choices is not None:
        kwargs["choices"] = (*spec.choices, *spec.aliases)
        kwargs["metavar"] = "{" + ",".join(spec.choices) + "}"
    elif spec.kind in (int, float):
        kwargs["type"] = _number(spec.kind, flag_of(spec))
        kwargs.setdefault("metavar", spec.name.upper())
    target.add_argument(*flags_of(spec), **kwargs)


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(kind: type, flag: str):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            word = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{flag} takes {word}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def given_values(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user gave on the command line, nested configs as nested dicts."""
    values: dict[str, Any] = {}
    for spec in option_specs(cls):
        dotted = prefix + spec.name
        if spec.is_config:
            nested = given_values(args, spec.kind, prefix=dotted + ".")
            if nested:
                values[spec.name] = nested
        elif getattr(args, dotted, None) is not None:
            values[spec.name] = getattr(args, dotted)
    return values


def merge(base: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by each layer in turn; nested dicts merge key by key."""
    out = dict(base)
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def build_config(cls: type, defaults: Any, *layers: Mapping[str, Any]):
    """``cls`` from its ``defaults`` instance with each layer of values applied (ValueError naming
    the flag when a value is bad)."""
    values = merge(dataclasses.asdict(defaults), *layers)
    try:
        return config_from_dict(cls, values)
    except ValueError as exc:
        raise ValueError(flag_message(str(exc), cls)) from exc


def flag_message(message: str, cls: type) -> str:
    """Say ``--top-n`` where a config says ``TuneConfig.top_n`` (nested configs included)."""
    for owner, spec in sorted(_all_specs(cls), key=lambda item: -len(item[1].name)):
        message = message.replace(f"{owner}.{spec.name}", flag_of(spec))
    return message


def _all_specs(cls: type) -> list[tuple[str, OptionSpec]]:
    out = []
    for spec in option_specs(cls):
        if spec.is_config:
            out += _all_specs(spec.kind)
        else:
            out.append((cls.__name__, spec))
    return out
