"""What erc never prints or writes: credentials inside storage URIs, and the values of
secret environment variables.

A URI may carry them as ``scheme://KEY:SECRET@bucket/...`` (also where a message or a
path has dropped the ``scheme://``: ``KEY:SECRET@bucket``) or as query parameters
(pyarrow's ``access_key``, ``secret_key``, ``session_token``; signed-URL signatures).
The value of an environment variable named as a secret (``AWS_SECRET_ACCESS_KEY``,
``HF_TOKEN``, ``RAY_AUTH_TOKEN``, ``*_PASSWORD``, ...) is hidden wherever it appears (a
library's message may quote it). ``redact`` replaces them with ``***``; erc applies it to
its console lines, the run log, log records, tracebacks and every text file it writes
(manifests, run records, reports).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any
from urllib.parse import unquote

# The rest of a URI, up to whitespace, a quote that closes it or the next "scheme://" (URIs
# joined by "," or ";"); a run of characters at a time, not one (fast on long paths). A
# quote inside a word is part of it: "'" is a character a password in a URI may hold
# (pyarrow takes s3://minio:Pa'ss@bucket), and a URI that '"' makes invalid is still quoted
# by the message refusing it; a quote closing a URI ends the word (a space, a quote,
# punctuation or the end follow it).
_QUOTE_INSIDE = r"""['"](?![\s'",;:)\]}>]|$)"""
_URI_RUN = rf"""[^\s'":]*(?:{_QUOTE_INSIDE}[^\s'":]*)*"""
_URI_REST = rf"""{_URI_RUN}(?::(?!//){_URI_RUN})*"""
# Up to the last "@" of the URI: the host follows it, and a secret may hold "/" (AWS keys
# do) or an "@" nobody percent-encoded (an "@" in the path then hides the bucket as well,
# never a secret).
# A scheme starts where its run of scheme characters does: tried from inside a long run,
# the pattern would rescan it from every character.
_USERINFO = re.compile(rf"(?<![a-z0-9+.-])((?:[a-z][a-z0-9+.-]*)://){_URI_REST}@",
                       re.IGNORECASE)
# "user:secret@host" without its "scheme://" (messages that drop the scheme, URIs a path
# has folded into "s3:/..."): the part before "@" holds a ":". It starts where its run of
# characters does (after a space, a quote, "/" or "@", never inside the run: a long run
# would be rescanned from each of its characters) and only where an "@" follows in the
# same word (a long word without one would otherwise be scanned again from every ":").
_BARE_USERINFO = re.compile(
    rf"""(?<![^\s/@'"])[^\s/@:'"]+:(?!//)(?=[^\s'"@]+@){_URI_REST}@""")
# A parameter follows "?", "&", ";" (a legacy separator, and the end of "&amp;" where a
# URI is HTML-escaped, as in report.html) or "#" (a fragment: "#access_token="). Its name
# is a secret's once percent-decoded: erc reads "secret%5Fkey" as secret_key (parse_qsl).
_PARAM_NAME = re.compile(r"[?&;#]([a-z0-9_.%+-]*)=", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"key|secret|token|password|credential|signature|sig", re.IGNORECASE)
# The value ends at a quote or bracket no URI holds unencoded (a URI quoted in JSON, a
# message or HTML keeps its closing quote)...
_PARAM_VALUE = re.compile(r"""[^&#\s'"`<>]*""")
# ...and punctuation that ends a sentence or a message's part ("?token=T: failed") is no
# part of it (signatures and tokens are hex or base64).
_TRAILING = ":,.;)]}"


def _hide_secret_params(text: str) -> str:
    parts, done = [], 0
    for name in _PARAM_NAME.finditer(text):
        if name.start() < done or not _SECRET_PARAM.search(unquote(name.group(1))):
            continue  # inside a value already hidden, or no secret's name
        value = _PARAM_VALUE.match(text, name.end()).group()
        parts += [text[done:name.end()], "***"]
        done = name.end() + len(value.rstrip(_TRAILING))
    return "".join(parts) + text[done:]


# Names of environment variables that hold secrets; their values are hidden when long
# enough not to be a word of other text: issued keys and tokens run to 16-40 characters,
# while a short value (a local test store's "minioadmin") is often a bucket's or a user's
# name too, which masking would hide wherever it appears. (TOKENIZERS_PARALLELISM is a
# setting of Hugging Face's tokenizers, no token.)
_SECRET_ENV = re.compile(r"SECRET|TOKEN(?!IZER)|PASSWORD|PASSWD|CREDENTIAL|(?:^|_)(?:API|ACCESS|ACCOUNT|"
                         r"PRIVATE|STORAGE|AUTH)_?KEY(?:$|_)", re.IGNORECASE)
_MIN_SECRET = 12
_LOCATION_ENV = re.compile(r"_(?:PATH|FILE|DIR|HOME|URL|ENDPOINT)$", re.IGNORECASE)  # where, not what


def is_secret_name(name: str) -> bool:
    """Whether an environment variable of this name holds a secret (``AWS_SECRET_ACCESS_KEY``,
    ``HF_TOKEN``), not where one is (``RAY_AUTH_TOKEN_PATH``)."""
    return bool(_SECRET_ENV.search(name)) and not _LOCATION_ENV.search(name)


@functools.lru_cache(maxsize=8)
def _secret_values(environment: frozenset) -> tuple[str, ...]:
    values = {value for name, value in environment  # a credentials file's path is no secret
              if is_secret_name(name) and len(value) >= _MIN_SECRET and not os.path.exists(value)}
    return tuple(sorted(values, key=len, reverse=True))  # longest first: no half-hidden value


def _hide_environment_secrets(text: str) -> str:
    for value in _secret_values(frozenset(os.environ.items())):
        if value in text:
            text = text.replace(value, "***")
    return text


def redact(text: str) -> str:
    """``text`` with every credential in a URI, and every secret environment variable's
    value, replaced by ``***``."""
    text = _hide_environment_secrets(str(text))
    if "@" not in text and "=" not in text:
        return text  # nothing a URI could hide a credential in (the common case, cheap)
    text = _BARE_USERINFO.sub("***@", _USERINFO.sub(r"\1***@", text))
    return _hide_secret_params(text)


def clip(text: str, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters (a cut first could leave a
    credential's start with no "@" or "=" after it to be known by)."""
    text = redact(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def redact_uri(uri: str) -> str:
    """One URI as the user typed it, whole: what lies between its scheme and its last "@"
    is masked even where ``redact`` cannot tell where the URI ends (a space in a password
    makes it no URI pyarrow opens, and the message refusing it quotes it)."""
    head, at, tail = uri.rpartition("@")
    if at:
        scheme = re.match(r"[^:/@]*:/*", head)
        uri = f"{scheme.group() if scheme else ''}***@{tail}"
    return redact(uri)


def redact_data(value: Any) -> Any:
    """``redact`` applied to every string inside lists and mappings."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value
