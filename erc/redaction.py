"""What erc never prints or writes: credentials inside storage URIs.

A URI may carry them as ``scheme://KEY:SECRET@bucket/...`` (also where a message or a
path has dropped the ``scheme://``: ``KEY:SECRET@bucket``) or as query parameters
(pyarrow's ``access_key``, ``secret_key``, ``session_token``; signed-URL signatures).
``redact`` replaces them with ``***``; erc applies it to its console lines, the run log,
log records, tracebacks and every text file it writes (manifests, run records, reports).
"""

from __future__ import annotations

import re
from typing import Any

# Up to the first "@": a secret may hold "/" (AWS keys do); a secret with "@" in it must be
# percent-encoded in a URI anyway.
_USERINFO = re.compile(r"((?:[a-z][a-z0-9+.-]*)://)[^@\s]*@", re.IGNORECASE)
# "user:secret@host" without its "scheme://" (messages that drop the scheme, URIs a path
# has folded into "s3:/..."): the part before "@" holds a ":".
_BARE_USERINFO = re.compile(r"(?<![*\w])[^\s/@:'\"]+:(?!//)[^\s@'\"]+@")
_SECRET_PARAMS = re.compile(
    r"([?&](?:[a-z0-9_.-]*(?:key|secret|token|password|credential|signature|sig)[a-z0-9_.-]*)=)"
    r"[^&#\s]*",
    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every credential in a URI replaced by ``***``."""
    text = str(text)
    if "@" not in text and "=" not in text:
        return text  # nothing a URI could hide a credential in (the common case, cheap)
    text = _BARE_USERINFO.sub("***@", _USERINFO.sub(r"\1***@", text))
    return _SECRET_PARAMS.sub(r"\1***", text)


def redact_data(value: Any) -> Any:
    """``redact`` applied to every string inside lists and mappings."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value
