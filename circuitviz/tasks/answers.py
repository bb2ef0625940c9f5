"""The final answer of a generated response, and when two answers are the same.

Extraction (``extract_answer``), in order:

1. the text after the first ``####`` (GSM8K's mark; the paper's prompt asks for it), up to the end
   of that line: the mark ends the worked answer, and whatever a model rambles on with after it
   (often another "#### ..." of a new, invented problem) is not its answer;
2. else the last number in the text (``-3``, ``1,234.5``, ``.5``);
3. else the whole response, stripped.

Comparison (``same_answer``) normalises both sides: surrounding space, one trailing full stop, a
leading currency sign and thousands separators go; numbers compare by value (``42.0`` = ``42``);
other text compares case-insensitively with runs of white space collapsed.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_MARK = re.compile(r"####")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_SPACE = re.compile(r"\s+")


def extract_answer(text: str) -> str:
    """The final answer of ``text`` (see the module docstring); "" only for blank text."""
    mark = _MARK.search(text)
    if mark is not None:
        rest = text[mark.end() :].strip()
        line = rest.splitlines()[0].strip() if rest else ""
        if line:
            return line
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    return text.strip()


def normalize_answer(text: str) -> str:
    """A canonical form: numbers by value, other text case- and space-insensitive."""
    value = text.strip()
    if value.endswith(".") and not value.endswith(".."):
        value = value[:-1].rstrip()
    value = value.removeprefix("$").removeprefix("€").removeprefix("£").strip()
    number = _as_number(value)
    if number is not None:
        return number
    return _SPACE.sub(" ", value).lower()


def _as_number(text: str) -> str | None:
    candidate = text.replace(",", "") if _NUMBER.fullmatch(text) else text
    try:
        value = Decimal(candidate)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def same_answer(predicted: str, reference: str) -> bool:
    """Whether a generated response's extracted answer equals the reference answer."""
    return normalize_answer(extract_answer(predicted)) == normalize_answer(reference)
