"""Name encoding for subjects and KV keys, URL parsing, constructor checks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sessionws
from sessionws_nats import NatsTransport, transport_from_url
from sessionws_nats._names import decode_name, encode_name, validate_prefix

# What nats-server accepts as a KV key, and a subject made only of literal tokens.
KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")
SUBJECT_TOKEN = re.compile(r"[^\s.*>]+")


def test_typical_registry_names_pass_through() -> None:
    for name in ("myapp.k.3f2a9c", "myapp.close.3f2a", "myapp.nodes", "my-app_1.inbox.n-1"):
        assert encode_name(name) == name


def test_odd_names_are_escaped() -> None:
    assert encode_name("myapp.close:3f2a") == "myapp.close=3A3f2a"
    assert encode_name("a..b") == "a.=.b"
    assert encode_name(".lead") == "=.lead"
    assert encode_name("sp ace.*.>") == "sp=20ace.=2A.=3E"
    assert encode_name("é") == "=C3=A9"


@given(st.text())
def test_any_name_is_a_valid_subject_and_key_and_round_trips(name: str) -> None:
    encoded = encode_name(name)
    assert KV_KEY.fullmatch(encoded)
    assert not encoded.startswith(".") and not encoded.endswith(".")
    assert all(SUBJECT_TOKEN.fullmatch(token) for token in encoded.split("."))
    assert decode_name(encoded) == name


@given(st.text(), st.text())
def test_distinct_names_never_share_an_encoding(first: str, second: str) -> None:
    if first != second:
        assert encode_name(first) != encode_name(second)


def test_prefix_validation() -> None:
    assert validate_prefix("apps.sessionws", "subject_prefix") == "apps.sessionws"
    for bad in ("", "a..b", "a.*", "a b", "a.>"):
        with pytest.raises(ValueError, match="not a valid NATS subject prefix"):
            validate_prefix(bad, "subject_prefix")
    with pytest.raises(TypeError):
        encode_name(b"bytes")  # type: ignore[arg-type]


def test_from_url_servers_and_options() -> None:
    transport = NatsTransport.from_url(
        "nats://user:pw@a:4222,b:4223,tls://c?bucket=app_markers&subject_prefix=apps.ws&replicas=3&name=node1",
        reconnect_time_wait=0.5,
    )
    assert transport._servers == ["nats://user:pw@a:4222", "nats://b:4223", "tls://c"]
    assert transport._bucket == "app_markers"
    assert transport._subject_prefix == "apps.ws"
    assert transport._replicas == 3
    assert transport._connect_options["name"] == "node1"
    assert transport._connect_options["reconnect_time_wait"] == 0.5
    assert transport._connect_options["max_reconnect_attempts"] == -1


def test_keyword_options_win_over_the_query() -> None:
    transport = NatsTransport.from_url("tls://a?bucket=from_url", bucket="from_kwargs")
    assert transport._bucket == "from_kwargs"
    assert transport._servers == ["tls://a"]


def test_every_transport_option_can_be_set_in_the_url() -> None:
    transport = NatsTransport.from_url(
        "nats://a?request_timeout=2.5&open_timeout=1&poll_interval=0.2&shutdown_timeout=3"
        "&shared_dispatch=false&max_payload=4096&interest_grace=0.5&reconnect_time_wait=0.25"
    )
    assert transport._request_timeout == 2.5
    assert (transport._open_timeout, transport._poll_interval, transport._shutdown_timeout) == (1.0, 0.2, 3.0)
    assert transport._shared_dispatch is False
    assert transport.max_payload == 4096
    assert transport.interest_grace == 0.5
    assert transport._connect_options["reconnect_time_wait"] == 0.25


def test_unknown_keywords_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'prefix' for a NATS transport.*subject_prefix"):
        NatsTransport.from_url("nats://a", prefix="myapp")
    with pytest.raises(ValueError, match="did you mean 'bucket'"):
        NatsTransport.from_url("nats://a", buckets="x")
    with pytest.raises(TypeError, match="servers in the URL"):
        NatsTransport.from_url("nats://a", servers=["nats://b"])
    with pytest.raises(ValueError, match="unknown option 'prefix'"):
        sessionws.SessionRegistry("nats://a?prefix=myapp")


def test_the_core_url_table_finds_the_transport() -> None:
    transport = sessionws.transport_from_url("nats://127.0.0.1:4222")
    assert isinstance(transport, NatsTransport)
    assert isinstance(transport_from_url("tls://h:1"), NatsTransport)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://a", "not a NATS URL"),
        ("nats:/a", "not a NATS URL"),
        ("nats://a,,b", "empty server"),
        ("nats://a/path", "not a NATS server address"),
        ("nats://a,redis://b", "not a NATS server address"),
        ("nats://a?colour=blue", "unknown option 'colour'"),
        ("nats://a?replicas=three", "replicas='three'"),
        ("nats://a?shared_dispatch=maybe", "shared_dispatch='maybe'"),
        ("nats://a?replicas=9", "replicas must be an int from 1 to 5"),
        ("nats://a?bucket=bad.name", "bucket must be"),
        ("nats://a?subject_prefix=a..b", "not a valid NATS subject prefix"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        NatsTransport.from_url(url)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="either a nats-py client or servers"):
        NatsTransport()
    with pytest.raises(TypeError, match=r"must be a nats\.aio\.client\.Client"):
        NatsTransport("nats://a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty list"):
        NatsTransport(servers="nats://a")
    with pytest.raises(ValueError, match="request_timeout must be a positive"):
        NatsTransport(servers=["nats://a"], request_timeout=0)
    with pytest.raises(ValueError, match="no_echo"):
        NatsTransport.from_url("nats://a", no_echo=True)
    with pytest.raises(TypeError, match="servers in the URL"):
        NatsTransport(servers=["nats://a"], connect_options={"servers": ["nats://b"]})
    with pytest.raises(TypeError, match="a NATS URL must be a str"):
        NatsTransport.from_url(b"nats://a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "options"),
    [("nats://a?connect_wait=1.5", {}), ("nats://a", {"connect_wait": 1.5})],
)
def test_connect_wait_is_the_deprecated_name_of_open_timeout(url: str, options: dict[str, float]) -> None:
    with pytest.warns(DeprecationWarning, match="'connect_wait' is deprecated: use 'open_timeout'"):
        transport = NatsTransport.from_url(url, **options)
    assert transport._open_timeout == 1.5
    with pytest.warns(DeprecationWarning, match="connect_wait"):
        both = NatsTransport.from_url(url, **options, open_timeout=2)
    assert both._open_timeout == 2.0
    assert NatsTransport.from_url("nats://a")._open_timeout == 5.0


def test_the_nats_connect_timeout_still_goes_to_nats_connect() -> None:
    transport = NatsTransport.from_url("nats://a?connect_timeout=1", open_timeout=3)
    assert (transport._connect_options["connect_timeout"], transport._open_timeout) == (1.0, 3.0)
