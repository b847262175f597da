"""Credentials out of URLs before they reach a log, an audit record or an operator's screen.

A subscription callback is client input and may carry a credential: in its userinfo
(`https://user:pw@smo/`, `https://token@smo/`) or as a query or fragment parameter
(`?access_token=...`, `#sig=...`). `redact_url` masks the whole userinfo and the values of
credential-like parameters and keeps everything else (scheme, host, port, path, the other
parameters), so a log line still says where a notification went. It never raises: a URL
too malformed to take apart has everything between `://` and its last `@` masked.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus, urlsplit

REDACTED: Final = "[redacted]"

# Parameter names whose values are credentials: anything naming a token, secret, password,
# credential or signature, API keys (`api_key`, `x-api-key`, `key`), and the short names
# of signed-URL and OAuth schemes (`sig`, `code`).
_SECRET_PARAMETER: Final = re.compile(
    r"token|secret|passw|credential|signature|apikey|api[-_.]?key|(?:^|[-_.])key$"
    r"|^(?:sig|code|pwd|auth|authorization|session|sessionid|jwt)$"
)
# What a URL looks like inside free text (an error message, a JSON string).
_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*")
_AUTHORITY_END: Final = re.compile(r"[/?#]")
_TAIL_START: Final = re.compile(r"[?#]")
_PARAMETER_SEPARATOR: Final = re.compile(r"([&;])")


def is_secret_parameter(name: str) -> bool:
    """Whether a query or fragment parameter called `name` carries a credential."""
    return bool(_SECRET_PARAMETER.search(unquote_plus(name).strip().lower()))


def redact_url(url: str) -> str:
    """`url` with its userinfo and the values of credential-like parameters masked."""
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    head, tail = _split_tail(url, start)
    if scheme_end < 0:
        return head + _redact_tail(tail)
    if not _well_formed(url):
        # Mask generously: whatever might be userinfo (a password may hold "/", "?" or
        # "#" when nobody encoded it), up to the last "@".
        at = url.rfind("@")
        if at < start:
            return head + _redact_tail(tail)
        rest_head, rest_tail = _split_tail(url, at)
        return url[:start] + REDACTED + rest_head[at:] + _redact_tail(rest_tail)
    authority_end_match = _AUTHORITY_END.search(head, start)
    authority_end = authority_end_match.start() if authority_end_match else len(head)
    authority = head[start:authority_end]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rpartition("@")[2]
    return head[:start] + authority + head[authority_end:] + _redact_tail(tail)


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group(0)), text)


def _well_formed(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return False
    return True


def _split_tail(url: str, start: int) -> tuple[str, str]:
    """(`url` up to its query or fragment, the `?query#fragment` rest) from `start` on."""
    found = _TAIL_START.search(url, start)
    if found is None:
        return url, ""
    return url[: found.start()], url[found.start() :]


def _redact_tail(tail: str) -> str:
    """The `?query#fragment` part of a URL (either may be missing), parameters masked."""
    if not tail:
        return tail
    query, hash_sign, fragment = tail.partition("#")
    return _redact_parameters(query) + hash_sign + _redact_parameters(fragment)


def _redact_parameters(text: str) -> str:
    pieces = _PARAMETER_SEPARATOR.split(text)
    for index in range(0, len(pieces), 2):  # the odd ones are the separators
        name, equals, value = pieces[index].partition("=")
        if equals and value and is_secret_parameter(name.lstrip("?#")):
            pieces[index] = f"{name}={REDACTED}"
    return "".join(pieces)
