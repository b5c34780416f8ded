"""Origins: parsing and normalising ``Origin`` headers, allowed-origin patterns, the
policy's decision, and the guard's socket cap (the adapters' tests run them over sockets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionws import (
    ANY_ORIGIN,
    Origin,
    OriginPolicy,
    SessionRegistry,
    WebSocketGuard,
    WebSocketRefusedError,
    parse_origin,
    parse_origin_pattern,
)
from sessionws._origins import HeaderValues, request_origin


def headers_of(values: Mapping[str, Sequence[str]]) -> HeaderValues:
    lowered = {name.lower(): list(items) for name, items in values.items()}

    def get(name: str) -> list[str]:
        return lowered.get(name.lower(), [])

    return get


def decide(
    policy: OriginPolicy, origin: str | list[str] | None, host: str = "app.example:8080", **more: str
) -> bool:
    values: dict[str, list[str]] = {"host": [host]}
    if origin is not None:
        values["origin"] = origin if isinstance(origin, list) else [origin]
    for name, value in more.items():
        values[name.replace("_", "-")] = [value]
    return policy.check(headers_of(values), "http").allowed


# ---------------------------------------------------------------------- parse_origin
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("https://example.com", Origin("https", "example.com")),
        ("HTTPS://EXAMPLE.com", Origin("https", "example.com")),
        ("https://example.com:443", Origin("https", "example.com")),
        ("http://example.com:80", Origin("http", "example.com")),
        ("http://example.com:443", Origin("http", "example.com", 443)),
        ("https://example.com:80", Origin("https", "example.com", 80)),
        ("https://example.com/", Origin("https", "example.com")),
        ("http://127.0.0.1:8080", Origin("http", "127.0.0.1", 8080)),
        ("http://[::1]:8080", Origin("http", "[::1]", 8080)),
        ("http://[::1]:80", Origin("http", "[::1]")),
        ("https://xn--bcher-kva.example", Origin("https", "xn--bcher-kva.example")),
        ("  https://example.com\t", Origin("https", "example.com")),
        ("chrome-extension://abcdef", Origin("chrome-extension", "abcdef")),
    ],
)
def test_origins_are_normalised(header: str, expected: Origin) -> None:
    assert parse_origin(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "null",
        "example.com",
        "//example.com",
        "https://",
        "https://user@example.com",
        "https://user:pass@example.com",
        "https://example.com/path",
        "https://example.com//",
        "https://example.com?x=1",
        "https://example.com#x",
        "https://example.com:99999",
        "https://example.com:",
        "https://example.com:80a",
        "https://exa mple.com",
        "https://example.com, https://evil.example",
        "https://example.com https://evil.example",
        "https://bücher.example",
        "https://example.com\r\nX: y",
        "https://[::1",
        "https://*.example.com",
        "1https://example.com",
    ],
)
def test_anything_but_one_origin_is_malformed(header: str) -> None:
    assert parse_origin(header) is None


@given(st.text(max_size=60))
def test_parse_origin_is_total(header: str) -> None:
    origin = parse_origin(header)
    if origin is not None:  # whatever it accepts serialises back to itself
        assert parse_origin(str(origin)) == origin


def test_the_request_origin_maps_websocket_schemes_to_the_pages() -> None:
    assert request_origin("ws", "App.Example:80") == Origin("http", "app.example")
    assert request_origin("wss", "app.example:443") == Origin("https", "app.example")
    assert request_origin("https", "app.example:8443") == Origin("https", "app.example", 8443)
    assert request_origin("http", "app.example/evil") is None
    assert request_origin("http", "user@app.example") is None


# ---------------------------------------------------------------------- patterns
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("https://example.com", "https://example.com"),
        ("https://Example.COM:443/", "https://example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://*.example.com", "https://*.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://*.bücher.example", "https://*.xn--bcher-kva.example"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_patterns_are_normalised(entry: str, expected: str) -> None:
    assert str(parse_origin_pattern(entry)) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("example.com", "no scheme"),
        ("*.example.com", "no scheme"),
        ("https://example.com/app", "path"),
        ("https://user@example.com", "user name"),
        ("https://", "no host"),
        ("https://ex*mple.com", "'*' may only open the host"),
        ("https://*example.com", "'*' may only open the host"),
        ("https://a.*.example.com", "'*' may only open the host"),
        ("https://example.com:http", "invalid port"),
        ("https://example.com:70000", "out of range"),
        ("https://*.[::1]", "wildcard needs a domain name"),
        ("https://exa mple.com", "invalid host"),
    ],
)
def test_bad_patterns_say_how_to_write_them(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match="allowed origin") as error:
        parse_origin_pattern(entry)
    assert message in str(error.value)


def test_wildcards_match_subdomains_only_on_the_same_scheme_and_port() -> None:
    pattern = parse_origin_pattern("https://*.example.com")
    assert pattern.matches(Origin("https", "a.example.com"))
    assert pattern.matches(Origin("https", "a.b.example.com"))
    assert not pattern.matches(Origin("https", "example.com"))
    assert not pattern.matches(Origin("https", "evilexample.com"))
    assert not pattern.matches(Origin("https", "example.com.evil.example"))
    assert not pattern.matches(Origin("http", "a.example.com"))
    assert not pattern.matches(Origin("https", "a.example.com", 8443))
    assert not pattern.matches(Origin("https", ".example.com"))


# ---------------------------------------------------------------------- the policy
def test_by_default_only_the_requests_own_origin_is_allowed() -> None:
    policy = OriginPolicy()
    assert decide(policy, "http://app.example:8080")
    assert decide(policy, "HTTP://APP.EXAMPLE:8080/")
    assert decide(policy, "http://app.example", host="app.example:80")
    assert not decide(policy, "https://app.example:8080")  # another scheme
    assert not decide(policy, "http://app.example:8081")  # another port
    assert not decide(policy, "http://app.example")  # the default port is another port
    assert not decide(policy, "https://evil.example")
    assert not decide(policy, "http://app.example:8080", host="")  # own origin unknown


def test_null_several_and_malformed_origins_are_refused() -> None:
    policy = OriginPolicy()
    assert not decide(policy, "null")
    assert not decide(policy, "NULL")
    assert not decide(policy, ["http://app.example:8080", "http://app.example:8080"])
    assert not decide(policy, ["http://app.example:8080", "https://evil.example"])
    assert not decide(policy, "http://user@app.example:8080")
    assert not decide(policy, "http://app.example:8080/path")
    verdict = policy.check(headers_of({"origin": ["null"], "host": ["a"]}), "http")
    assert "list 'null' in allowed_origins" in verdict.reason


def test_a_missing_origin_is_allowed_unless_required() -> None:
    assert decide(OriginPolicy(), None)
    assert not decide(OriginPolicy(require_origin=True), None)
    assert decide(OriginPolicy(require_origin=True), "http://app.example:8080")


def test_a_list_replaces_the_own_origin() -> None:
    policy = OriginPolicy(["https://app.example", "https://*.partner.example", "null"])
    assert decide(policy, "https://app.example", host="anything")
    assert decide(policy, "https://eu.partner.example")
    assert decide(policy, "null")
    assert not decide(policy, "http://app.example:8080")  # the own origin, not listed
    assert not decide(policy, "https://partner.example")


def test_any_origin_turns_the_check_off() -> None:
    policy = OriginPolicy(ANY_ORIGIN)
    assert decide(policy, "https://evil.example")
    assert decide(policy, "null")
    assert decide(policy, ["a", "b"])


def test_bad_policies_say_how_to_fix_them() -> None:
    with pytest.raises(TypeError, match=r"\['https://app.example'\]"):
        OriginPolicy("https://app.example")
    with pytest.raises(ValueError, match="allowed_origins='\\*' alone"):
        OriginPolicy(["https://app.example", "*"])
    with pytest.raises(TypeError, match="entries are str"):
        OriginPolicy([b"https://app.example"])  # type: ignore[list-item]


def test_forwarded_headers_count_only_when_trusted() -> None:
    behind = {"host": "10.0.0.5:8000", "x_forwarded_proto": "https", "x_forwarded_host": "app.example"}
    assert not decide(OriginPolicy(), "https://app.example", **behind)
    assert decide(OriginPolicy(trust_forwarded=True), "https://app.example", **behind)
    assert not decide(OriginPolicy(trust_forwarded=True), "http://10.0.0.5:8000", **behind)
    # The first entry is the one the client-facing proxy wrote.
    chained = {
        "host": "10.0.0.5:8000",
        "x_forwarded_proto": "https, http",
        "x_forwarded_host": "app.example, b",
    }
    assert decide(OriginPolicy(trust_forwarded=True), "https://app.example", **chained)
    rfc = {
        "host": "10.0.0.5:8000",
        "forwarded": 'for=1.2.3.4;proto=https;host="app.example:8443", for=5.6.7.8',
    }
    assert decide(OriginPolicy(trust_forwarded=True), "https://app.example:8443", **rfc)
    assert not decide(OriginPolicy(), "https://app.example:8443", **rfc)
    # Forwarded wins over X-Forwarded-*.
    both = {**rfc, "x_forwarded_host": "other.example"}
    assert decide(OriginPolicy(trust_forwarded=True), "https://app.example:8443", **both)


# ---------------------------------------------------------------------- the guard
@pytest.mark.anyio
async def test_the_guard_counts_refusals_and_holds_slots_while_upgrading() -> None:
    guard = WebSocketGuard(max_sockets_per_session=2)
    async with SessionRegistry("memory://") as registry:
        with guard.socket_slot(registry, "s"), guard.socket_slot(registry, "s"):
            with pytest.raises(WebSocketRefusedError) as refused, guard.socket_slot(registry, "s"):
                pass
            assert refused.value.status == 429
            with guard.socket_slot(registry, "another session"):
                pass
        with guard.socket_slot(registry, "s"):  # released: usable again
            pass
        with pytest.raises(WebSocketRefusedError) as forbidden:
            guard.check_origin(
                registry, headers_of({"origin": ["https://evil.example"], "host": ["a"]}), "http", "/ws"
            )
        assert forbidden.value.status == 403
        assert registry.stats()["refused_by_reason"] == {"sockets_per_session": 1, "origin": 1}


def test_the_cap_must_be_a_positive_int_or_none() -> None:
    assert WebSocketGuard(max_sockets_per_session=None).max_sockets_per_session is None
    for bad in (0, -1, 1.5, True, "100"):
        with pytest.raises(ValueError, match="max_sockets_per_session must be a positive int"):
            WebSocketGuard(max_sockets_per_session=bad)  # type: ignore[arg-type]
