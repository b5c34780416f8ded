"""Which web origins may open a websocket: ``Origin`` headers parsed, normalised and matched.

A browser attaches the site's cookies to a websocket upgrade whatever page opens it, and
the same-origin policy does not apply to websockets: a page on ``https://evil.example``
can open a socket to your app with your user's session (cross-site websocket hijacking).
Every browser names the page's origin in the ``Origin`` header of the upgrade, so the
server must check it. Framework-neutral: the adapters hand the request's headers and
scheme to :meth:`OriginPolicy.check`.

Decisions, each matching what browsers send (RFC 6454, the Fetch standard):

* An origin is ``scheme://host[:port]``, compared after lower-casing scheme and host and
  dropping the scheme's default port (80 for http/ws, 443 for https/wss); ``HTTP://A.com:80``
  is ``http://a.com``. A header with anything else (userinfo, a path other than ``/``, a
  query, several origins, whitespace inside, non-ASCII) is malformed and refused.
* ``null`` (sandboxed iframes, ``file:`` pages, some redirects) is refused unless listed.
* Two ``Origin`` headers are refused: nobody knows which one a proxy or the app checks.
* No ``Origin`` header: allowed unless ``require_origin=True``. Browsers always send one on
  a websocket upgrade, so a request without one is not a browser carrying a victim's
  cookies (Phoenix ``check_origin`` and gorilla/websocket let it through too; Django
  Channels' ``OriginValidator`` refuses it — ``require_origin=True`` does the same here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = (
    "ANY_ORIGIN",
    "Origin",
    "OriginPattern",
    "OriginPolicy",
    "OriginVerdict",
    "parse_origin",
    "parse_origin_pattern",
)

#: ``allowed_origins=ANY_ORIGIN`` turns the check off (non-browser clients only).
ANY_ORIGIN = "*"
NULL_ORIGIN = "null"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: A websocket scope's scheme, as the page that opened it would name its origin.
_PAGE_SCHEMES = {"ws": "http", "wss": "https"}

_SCHEME = r"(?P<scheme>[a-z][a-z0-9+.-]*)"
_HOST = r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)"
_PORT = r"(?::(?P<port>[0-9]{1,5}))?"
_ORIGIN = re.compile(rf"{_SCHEME}://{_HOST}{_PORT}/?", re.IGNORECASE | re.ASCII)
_HOST_AND_PORT = re.compile(rf"{_HOST}{_PORT}", re.IGNORECASE | re.ASCII)
_OWS = " \t"


@dataclass(frozen=True, slots=True)
class Origin:
    """A normalised web origin: lower-case ``scheme`` and ASCII ``host`` (IPv6 in
    brackets); ``port`` is ``None`` for the scheme's default port."""

    scheme: str
    host: str
    port: int | None = None

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + ("" if self.port is None else f":{self.port}")


def _normal_port(scheme: str, port: str | None) -> int | None:
    if port is None:
        return None
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} is out of range")
    return None if _DEFAULT_PORTS.get(scheme) == number else number


def parse_origin(value: str) -> Origin | None:
    """The origin an ``Origin`` header names, or ``None`` when it is not one origin.

    Strict: exactly ``scheme://host[:port]`` (a single trailing ``/`` is tolerated),
    ASCII only (browsers send international names in punycode). ``"null"`` is not an
    origin here: the policy decides on it.
    """
    match = _ORIGIN.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    scheme, host = match["scheme"].lower(), match["host"].lower()
    try:
        port = _normal_port(scheme, match["port"])
    except ValueError:
        return None
    return Origin(scheme, host, port)


def request_origin(scheme: str, host_header: str) -> Origin | None:
    """The origin of a request made with ``scheme`` to ``Host: host_header`` (``None``
    when the header is not a host)."""
    scheme = scheme.lower()
    scheme = _PAGE_SCHEMES.get(scheme, scheme)
    match = _HOST_AND_PORT.fullmatch(host_header.strip(_OWS))
    if match is None:
        return None
    try:
        port = _normal_port(scheme, match["port"])
    except ValueError:
        return None
    return Origin(scheme, match["host"].lower(), port)


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """One entry of ``allowed_origins``: an exact origin, or with ``wildcard`` every
    subdomain of ``host`` (any depth, not ``host`` itself), same scheme and port."""

    scheme: str
    host: str
    port: int | None = None
    wildcard: bool = False

    def matches(self, origin: Origin) -> bool:
        if origin.scheme != self.scheme or origin.port != self.port:
            return False
        if self.wildcard:
            return origin.host.endswith("." + self.host) and not origin.host.startswith(".")
        return origin.host == self.host

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        return f"{self.scheme}://{host}" + ("" if self.port is None else f":{self.port}")


def parse_origin_pattern(entry: str) -> OriginPattern:
    """Read one ``allowed_origins`` entry, or raise ``ValueError`` saying how to write it.

    ``"https://example.com"``, ``"http://127.0.0.1:8080"``, ``"https://*.example.com"``
    (every subdomain), international names in Unicode or punycode, a trailing ``/``.
    """
    if not isinstance(entry, str):
        raise TypeError(f"allowed_origins entries are str, not {type(entry).__name__}")
    text = entry.strip()
    hint = "write an origin as scheme://host[:port], e.g. 'https://example.com' or 'https://*.example.com'"
    scheme, separator, rest = text.partition("://")
    if not separator or not re.fullmatch(_SCHEME, scheme, re.IGNORECASE | re.ASCII):
        raise ValueError(f"allowed origin {entry!r} has no scheme: {hint}")
    scheme = scheme.lower()
    rest = rest.removesuffix("/")
    if any(char in rest for char in "/?#@") or not rest:
        raise ValueError(f"allowed origin {entry!r} has a path, query or user name, or no host: {hint}")
    wildcard = rest.startswith("*.")
    if wildcard:
        rest = rest[2:]
    if "*" in rest:
        raise ValueError(f"allowed origin {entry!r}: '*' may only open the host, as in '*.example.com'")
    host, port = _split_port(rest, entry, hint)
    if wildcard and host.startswith("["):
        raise ValueError(f"allowed origin {entry!r}: a wildcard needs a domain name, not an IP address")
    try:
        ascii_host = host if host.startswith("[") else _to_ascii(host)
    except UnicodeError as error:
        raise ValueError(f"allowed origin {entry!r} has an invalid host name ({error})") from None
    match = _HOST_AND_PORT.fullmatch(ascii_host + ("" if port is None else f":{port}"))
    if match is None:
        raise ValueError(f"allowed origin {entry!r} has an invalid host: {hint}")
    try:
        normal_port = _normal_port(scheme, port)
    except ValueError as error:
        raise ValueError(f"allowed origin {entry!r}: {error}") from None
    return OriginPattern(scheme, ascii_host.lower(), normal_port, wildcard)


def _split_port(rest: str, entry: str, hint: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        host, _, after = rest.partition("]")
        host += "]"
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError(f"allowed origin {entry!r} has an invalid host: {hint}")
        port = after[1:]
    else:
        host, separator, port = rest.rpartition(":")
        if not separator:
            return rest, None
    if not port.isascii() or not port.isdigit():
        raise ValueError(f"allowed origin {entry!r} has an invalid port: {hint}")
    return host, port


def _to_ascii(host: str) -> str:
    if host.isascii():
        return host.lower()
    return ".".join(label.encode("idna").decode("ascii") for label in host.lower().split("."))


class OriginVerdict(NamedTuple):
    """The answer of :meth:`OriginPolicy.check`; ``reason`` says why, for the log."""

    allowed: bool
    reason: str


#: Reads every value of one request header (name in any case).
HeaderValues = Callable[[str], Sequence[str]]


class OriginPolicy:
    """Which origins may open a websocket.

    ``allowed_origins``: ``None`` (default) allows the request's own origin only — its
    scheme and ``Host`` as the app sees them, or as the proxy forwarded them with
    ``trust_forwarded=True`` (``Forwarded``, else ``X-Forwarded-Proto``/``X-Forwarded-Host``,
    first entry; set it only behind a proxy that writes these headers). An iterable of
    origins (see :func:`parse_origin_pattern`; ``"null"`` admits the ``null`` origin)
    allows those instead — list your own origin too. ``"*"`` allows every origin: the
    check is off, for apps whose websockets serve non-browser clients only.
    ``require_origin=True`` refuses requests without an ``Origin`` header.
    """

    def __init__(
        self,
        allowed_origins: str | Iterable[str] | None = None,
        *,
        trust_forwarded: bool = False,
        require_origin: bool = False,
    ) -> None:
        self.any_origin = False
        self.allow_null = False
        self.patterns: tuple[OriginPattern, ...] | None = None
        if allowed_origins == ANY_ORIGIN:
            self.any_origin = True
        elif isinstance(allowed_origins, str):
            raise TypeError(
                f"allowed_origins is a list of origins, e.g. [{allowed_origins!r}], or '*' for any"
            )
        elif allowed_origins is not None:
            patterns: list[OriginPattern] = []
            for entry in allowed_origins:
                if entry == ANY_ORIGIN:
                    raise ValueError("'*' allows every origin: pass allowed_origins='*' alone, not in a list")
                if isinstance(entry, str) and entry.strip().lower() == NULL_ORIGIN:
                    self.allow_null = True
                else:
                    patterns.append(parse_origin_pattern(entry))
            self.patterns = tuple(patterns)
        self.trust_forwarded = bool(trust_forwarded)
        self.require_origin = bool(require_origin)

    def __repr__(self) -> str:
        if self.any_origin:
            allowed = "'*'"
        elif self.patterns is None:
            allowed = "own origin"
        else:
            allowed = repr([str(pattern) for pattern in self.patterns] + ["null"] * self.allow_null)
        return f"<OriginPolicy {allowed}>"

    def check(self, headers: HeaderValues, scheme: str) -> OriginVerdict:
        """Whether a websocket upgrade with these headers (and URL ``scheme``) may proceed."""
        if self.any_origin:
            return OriginVerdict(True, "any origin allowed")
        values = headers("origin")
        if not values:
            if self.require_origin:
                return OriginVerdict(False, "no Origin header (require_origin=True)")
            return OriginVerdict(True, "no Origin header: not a browser")
        if len(values) > 1:
            return OriginVerdict(False, "several Origin headers")
        value = values[0]
        if value.strip(_OWS).lower() == NULL_ORIGIN:
            if self.allow_null:
                return OriginVerdict(True, "null origin allowed")
            return OriginVerdict(False, "origin 'null' (list 'null' in allowed_origins to allow it)")
        origin = parse_origin(value)
        if origin is None:
            return OriginVerdict(False, f"malformed Origin header {_shown(value)}")
        if self.patterns is not None:
            if any(pattern.matches(origin) for pattern in self.patterns):
                return OriginVerdict(True, "listed origin")
            return OriginVerdict(False, f"origin {origin} is not in allowed_origins")
        own = self.own_origin(headers, scheme)
        if own is None:
            return OriginVerdict(False, f"origin {origin}: the request's own origin is unknown (Host header)")
        if origin == own:
            return OriginVerdict(True, "own origin")
        hint = "" if self.trust_forwarded else "; behind a proxy, pass trust_forwarded=True"
        return OriginVerdict(
            False, f"origin {origin} is not the request's own origin {own} (list it in allowed_origins{hint})"
        )

    def own_origin(self, headers: HeaderValues, scheme: str) -> Origin | None:
        """The request's own origin (``None`` when its ``Host`` is missing, repeated or malformed)."""
        host_values = headers("host")
        if self.trust_forwarded:
            forwarded_scheme, forwarded_host = _forwarded(headers)
            scheme = forwarded_scheme or scheme
            if forwarded_host is not None:
                host_values = [forwarded_host]
        if len(host_values) != 1:
            return None
        return request_origin(scheme, host_values[0])


def _first(headers: HeaderValues, name: str) -> str | None:
    values = headers(name)
    if not values:
        return None
    first = values[0].split(",")[0].strip(_OWS)
    return first or None


def _forwarded(headers: HeaderValues) -> tuple[str | None, str | None]:
    """Scheme and host the client-facing proxy saw: RFC 7239 ``Forwarded`` (its first
    element), else ``X-Forwarded-Proto``/``X-Forwarded-Host``."""
    scheme = _first(headers, "x-forwarded-proto")
    host = _first(headers, "x-forwarded-host")
    values = headers("forwarded")
    if values:
        element = _split_unquoted(values[0], ",")[0]
        for pair in _split_unquoted(element, ";"):
            name, _, raw = pair.strip(_OWS).partition("=")
            value = raw.strip(_OWS)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            if name.lower() == "proto" and value:
                scheme = value
            elif name.lower() == "host" and value:
                host = value
    return scheme, host


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _shown(value: str) -> str:
    """An attacker's header, safe and short for a log line."""
    return repr(value[:80] + ("..." if len(value) > 80 else ""))
