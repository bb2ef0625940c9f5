"""The CLI answers --help without importing the engine (measured with -X importtime, not time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from circuitviz.cli import build_parser

HEAVY = ("torch", "transformers", "transformer_lens", "streamlit", "plotly", "matplotlib", "pandas")


def subcommands() -> list[list[str]]:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    out = [[]]
    for name, sub in commands.items():
        out.append([name])
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        out += [[name, inner] for action in nested for inner in action.choices]
    return out


def imported_modules(argv: list[str]) -> set[str]:
    """Top-level packages a fresh interpreter imported while printing ``circuitviz ARGV --help``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "circuitviz", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "circuitviz" in names  # the measurement itself worked
    return names


@pytest.mark.parametrize("argv", subcommands(), ids=lambda argv: " ".join(argv) or "circuitviz")
def test_help_imports_no_engine(argv):
    heavy = imported_modules(argv) & set(HEAVY)
    assert not heavy, f"`circuitviz {' '.join(argv)} --help` imported {sorted(heavy)}"


def test_export_formats_listed_for_help_match_the_exporter():
    from circuitviz.cli.export import FORMATS
    from circuitviz.plotting.export import FORMATS as EXPORTER_FORMATS

    assert set(FORMATS) == set(EXPORTER_FORMATS)
