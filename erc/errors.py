"""The errors a user can cause and fix: each says what is wrong and where in one line
(or a few, for missing weights), and the command line prints it without a traceback and
exits with status 2. Anything else that escapes a command is a bug in erc."""

from __future__ import annotations


class ErcError(Exception):
    """An expected failure: bad input, a bad option, an unwritable or foreign output."""

    # Whether the message is laid out on several lines on purpose (missing weights); any
    # other message is printed on one line, a newline from the input shown as \n.
    multiline = False


class ConfigError(ErcError, ValueError):
    """A config file, option or override is invalid (the message names the key)."""


class InputError(ErcError, ValueError):
    """An input (corpus, feature folder, model folder) is missing or not what it should be."""


class OwnershipError(ErcError):
    """An output folder holds files erc did not write: erc will not write into it."""


class BusyError(ErcError):
    """Another erc process is writing the same output folder."""


# Control characters other than tab, as Python writes them in a string (\n, \x1b): text
# from the input (a file name, a speaker) printed on a console keeps its line and cannot
# drive the terminal. Lone surrogates too (\udce9: how Python reads the bytes of a file
# name that are not UTF-8), which no UTF-8 file or console can hold.
_ESCAPES = {c: repr(chr(c))[1:-1]
            for c in [*range(32), *range(0x7f, 0xa0), *range(0xD800, 0xE000)] if c != 9}


def printable(text: object) -> str:
    """``text`` for a console line, its control characters escaped."""
    return str(text).translate(_ESCAPES)


def preview(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never print a huge value (a
    credential in it masked before the cut, which could leave its start unmasked)."""
    from erc.redaction import clip

    return clip(repr(value), limit)
