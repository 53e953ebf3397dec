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


def preview(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never print a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
