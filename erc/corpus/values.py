"""Typed values of a corpus row. Each parser takes what a cell of a CSV, JSON Lines or
Parquet file holds (text, a number, a boolean, bytes, a list, a mapping, a date) and
returns the field's value, or raises ``RowProblem`` with the reason the row is set aside
for (``erc.schema.PROBLEM_REASONS``): a value is never truncated, guessed or stored as a
Python repr.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import unicodedata

from erc.errors import preview

MAX_TURN = 2**31 - 1  # the utterance table stores turns as int32
_WHOLE = re.compile(r"\+?([0-9]+)(?:\.0*)?")
# A lone UTF-16 surrogate: JSON's "\ud800" and a Python literal's escape decode to one, but
# it is no character, and no UTF-8 text (no Parquet file) can hold it.
SURROGATE = re.compile("[\ud800-\udfff]")
_UNSEEN = {"Cc", "Cf", "Zs", "Zl", "Zp"}  # control, format and space characters
_CLOCK = re.compile(r"(?:([0-9]+):)?([0-9]{1,2}):([0-9]{1,2}(?:[.,][0-9]*)?)")
# Seconds with a decimal comma ("1257,256"): a ";"-separated CSV from a spreadsheet in a
# locale that writes decimals so; one comma only, so "1,234,567" is no time.
_DECIMAL_COMMA = re.compile(r"[0-9]+,[0-9]+")


class RowProblem(ValueError):
    """One row cannot be read: a reason of erc.schema.PROBLEM_REASONS and a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and value.strip() == "")


def id_value(value, name: str) -> str | None:
    """An id (speaker, dialogue, utterance) as ``text_value`` reads it, its spaces around
    dropped; None when nothing in it is seen (spaces, control and format characters such
    as "\x01" or a zero-width space): such an id names an invisible person or conversation."""
    text = text_value(value, name)
    if text is None or all(unicodedata.category(c) in _UNSEEN for c in text):
        return None
    return text.strip()


def kind(value) -> str:
    """What a value is, in a message: "bytes", "a list", "a mapping", "a boolean", ..."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "no value (null)"
    if isinstance(value, (int, float)):
        return "a number"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _wrong_type(name: str, value, wanted: str) -> RowProblem:
    return RowProblem("bad_type", f"{name}: {kind(value)} ({preview(value, 40)}) where {wanted} belongs")


def text_value(value, name: str) -> str | None:
    """A text field (ids, speaker, transcript, label, paths): text, or a whole or decimal
    number written as text (``3`` and ``3.0`` -> "3"); blank -> None."""
    if blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal) and value.is_finite():  # a Parquet decimal column
        return str(int(value)) if value == value.to_integral_value() else str(value)
    raise _wrong_type(name, value, "text")


def parse_turn(value, name: str = "turn") -> int:
    """A turn: a whole number from 0 to MAX_TURN (``3``, ``"3"``, ``3.0``); ``1.7``,
    ``-1``, ``99999999999`` and ``"two"`` are bad_turn problems."""
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        if not isinstance(value, int) and not (math.isfinite(value) and value == int(value)):
            raise RowProblem("bad_turn", f"{name} {preview(value, 40)} is not a whole number")
        number = int(value)
    elif isinstance(value, str):
        match = _WHOLE.fullmatch(value.strip())
        if not match or len(match.group(1).lstrip("0")) > len(str(MAX_TURN)):
            raise RowProblem("bad_turn", f"{name} {preview(value, 40)} is not a whole number "
                             f"from 0 to {MAX_TURN}")
        number = int(match.group(1))
    else:
        raise _wrong_type(name, value, "a whole number")
    if not 0 <= number <= MAX_TURN:
        raise RowProblem("bad_turn", f"{name} {preview(value, 40)} is outside 0..{MAX_TURN}")
    return number


def parse_time(value, name: str = "time", per_second: float = 1.0) -> float | None:
    """Blank -> None; a number, of seconds (``12.5``) or of 1/``per_second`` seconds
    (``2150`` with per_second 1000 is milliseconds), of seconds with a decimal comma too
    (``12,5``; not in milliseconds, where it may part thousands), or a clock time
    (``00:01:02.500``, ``00:01:02,500``, ``01:02.5``) -> seconds. Unparseable or not
    finite: bad_time; below zero: negative_time; bytes, lists, booleans: bad_type."""
    if blank(value):
        return None
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits: no float holds it
            raise RowProblem("bad_time", f"{name} {preview(value, 40)} is not a finite time") from None
    elif isinstance(value, datetime.timedelta):  # a Parquet duration: seconds whatever the unit
        seconds = value.total_seconds() * per_second
    elif isinstance(value, str):
        text = value.strip()
        clock = _CLOCK.fullmatch(text)
        if clock:
            hours, minutes, secs = clock.groups()
            minutes_, seconds_ = int(minutes), float(secs.replace(",", "."))
            if (hours is not None and minutes_ >= 60) or seconds_ >= 60:
                raise RowProblem("bad_time", f"{name} {preview(value, 40)} is not a clock time")
            return int(hours or 0) * 3600 + minutes_ * 60 + seconds_
        if per_second == 1 and _DECIMAL_COMMA.fullmatch(text):  # in ms "2,150" may be 2150
            text = text.replace(",", ".")
        try:
            seconds = float(text)
        except ValueError:
            raise RowProblem("bad_time", f"{name} {preview(value, 40)}: not seconds or "
                             f"[HH:]MM:SS.mmm") from None
    else:
        raise _wrong_type(name, value, "a time")
    seconds /= per_second
    if not math.isfinite(seconds):
        raise RowProblem("bad_time", f"{name} {preview(value, 40)} is not a finite time")
    if seconds < 0:
        raise RowProblem("negative_time", f"{name} {preview(value, 40)} is below zero")
    return seconds


def meta_value(value, name: str) -> str | None:
    """A column kept in ``meta`` as text: scalars as they read, dates in ISO form, lists
    and mappings as JSON; bytes (no text to keep) are bad_type."""
    if blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        return text_value(value, name) if isinstance(value, (int, float)) else str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return repr(value.total_seconds())
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            pass  # bytes, dates or NaN inside
    raise _wrong_type(name, value, "text, a number or JSON-like data")
