"""HTML text for every report erc writes (the run report, QC's, tune's): one escape."""

from __future__ import annotations

import html

# Control characters other than tab, newline and carriage return are not HTML text: a
# speaker name holding NUL or ESC is shown with U+FFFD in their place.
_CONTROLS = {c: "\ufffd" for c in [*range(32), *range(0x7f, 0xa0)] if c not in (9, 10, 13)}


def esc(value) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value).translate(_CONTROLS))
