"""Close codes, id providers, the URL table and the CLI."""

from __future__ import annotations

import functools
import subprocess
import sys
import uuid
from collections.abc import MutableMapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import sessionws
from sessionws import (
    Event,
    Handle,
    MemoryHub,
    MemoryTransport,
    SessionKeyIdProvider,
    SessionRegistry,
    Transport,
    known_schemes,
    transport_from_url,
    validate_close,
)
from sessionws.transport import ENTRY_POINT_GROUP
from tests._helpers import FAST, wait_for
from tests._plugins import install_transport_plugin
from tests.core.helpers import RecordingConnection

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1012, 1013, 1014, 3000, 4401, 4999])
def test_sendable_close_codes_are_accepted(code: int) -> None:
    validate_close(code, "reason")


@pytest.mark.parametrize("code", [999, 1002, 1004, 1005, 1006, 1015, 2999, 5000, -1])
def test_reserved_close_codes_are_refused(code: int) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        validate_close(code, "")


def test_close_reason_is_limited_to_123_bytes_of_utf8() -> None:
    validate_close(1000, "é" * 61)
    with pytest.raises(ValueError, match="124 bytes"):
        validate_close(1000, "é" * 62)
    with pytest.raises(TypeError):
        validate_close("1000", "")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        validate_close(True, "")
    with pytest.raises(TypeError):
        validate_close(1000, None)  # type: ignore[arg-type]


async def test_verbs_validate_close_codes_before_doing_anything() -> None:
    async with SessionRegistry("memory://") as registry:
        with pytest.raises(ValueError, match="cannot be sent"):
            await registry.close_all("k", code=1006)
        with pytest.raises(ValueError, match="bytes of UTF-8"):
            await registry.revoke("k", reason="x" * 200)
        with pytest.raises(ValueError, match="ttl"):
            await registry.revoke("k", ttl=0)
        with pytest.raises(TypeError, match="keys must be str"):
            await registry.close_all(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            await registry.count("")


async def test_register_checks_its_keys_on_every_path() -> None:
    """A held key takes the short path; whatever misses it is checked by the general one."""
    async with SessionRegistry("memory://") as registry:
        await registry.register(RecordingConnection("first"), "k")  # "k" is now held
        for bad, error in (
            ("", ValueError),
            ([], ValueError),
            (["k", ""], ValueError),
            ([b"k"], TypeError),
            (42, TypeError),
            (["k", 42], TypeError),
        ):
            with pytest.raises(error):
                await registry.register(RecordingConnection("bad"), bad)  # type: ignore[arg-type]
        assert registry.local_count("k") == 1


async def test_the_short_path_builds_the_same_handle_as_the_general_path() -> None:
    """The short path builds its handle without ``Handle.__init__``: every slot is set."""
    async with SessionRegistry("memory://") as registry:
        general = await registry.register(RecordingConnection("first"), "k")
        short = await registry.register(RecordingConnection("second"), "k")
        other_key = await registry.register(RecordingConnection("third"), ("k", "user"))
        slots = [name for name in Handle.__slots__ if name not in ("__weakref__", "_queue")]
        for handle in (general, short, other_key):
            assert all(hasattr(handle, name) for name in slots), handle
            assert not handle.pending and not handle.closing
        assert type(short) is type(general)
        assert short.id.startswith(f"{registry.node_id}.") and short.id != general.id
        assert short.states == general.states and short.keys == ("k",)
        assert other_key.keys == ("k", "user")
        assert short.registration_sequence == general.registration_sequence
        await registry.unregister(short)
        assert registry.local_count("k") == 2


class Request:
    def __init__(self) -> None:
        self.session: dict[str, Any] = {}


async def get_session(request: Request) -> MutableMapping[str, Any]:
    return request.session


async def test_session_key_provider_creates_keeps_and_deletes_ids() -> None:
    provider = SessionKeyIdProvider(get_session)
    request = Request()
    assert await provider.get_id(request) is None
    first = await provider.ensure_id(request)
    assert len(first) >= 20 and request.session == {"sessionws_id": first}
    assert await provider.ensure_id(request) == first
    second = await provider.new_id(request)
    assert second != first and await provider.get_id(request) == second
    await provider.delete_id(request)
    await provider.delete_id(request)
    assert await provider.get_id(request) is None


async def test_sync_and_async_id_factories_are_both_supported() -> None:
    def sync_factory(request: Request) -> str:
        return "sync-id"

    async def async_factory(request: Request) -> str:
        return "async-id"

    class CallableFactory:
        async def __call__(self, request: Request) -> str:
            return "callable-id"

    for factory, expected in (
        (sync_factory, "sync-id"),
        (async_factory, "async-id"),
        (CallableFactory(), "callable-id"),
    ):
        provider = SessionKeyIdProvider(get_session, id_factory=factory, session_key="k")
        request = Request()
        assert await provider.new_id(request) == expected
        assert request.session == {"k": expected}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [(None, TypeError, "returned NoneType"), ("", ValueError, "empty id"), (42, TypeError, "returned int")],
)
async def test_id_factories_returning_junk_raise_clear_errors(
    value: object, error: type[Exception], message: str
) -> None:
    def junk(request: Request) -> Any:
        return value

    provider = SessionKeyIdProvider(get_session, id_factory=junk)
    request = Request()
    with pytest.raises(error, match=message):
        await provider.new_id(request)
    assert request.session == {}


def test_an_id_factory_that_cannot_take_the_request_fails_at_construction() -> None:
    def two_arguments(request: Request, extra: str) -> str:
        return extra

    for factory in (lambda: "an-id", two_arguments, uuid.uuid4):
        with pytest.raises(TypeError, match="takes the request as its one argument"):
            SessionKeyIdProvider(get_session, id_factory=factory)  # type: ignore[arg-type]
    # Anything that accepts one positional argument is fine.
    SessionKeyIdProvider(get_session, id_factory=lambda *args: "an-id")
    SessionKeyIdProvider(get_session, id_factory=functools.partial(lambda prefix, request: prefix, "x"))


def test_id_provider_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="callable"):
        SessionKeyIdProvider(get_session, id_factory="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_key"):
        SessionKeyIdProvider(get_session, session_key="")


def test_memory_urls_make_private_or_shared_hubs() -> None:
    first, second = transport_from_url("memory://shared-hub"), transport_from_url("memory://shared-hub")
    assert isinstance(first, MemoryTransport) and isinstance(second, MemoryTransport)
    assert first.hub is second.hub
    assert transport_from_url("memory://").hub is not transport_from_url("memory://").hub  # type: ignore[attr-defined]
    assert isinstance(first, Transport)


def test_memory_urls_take_their_options_in_the_query_and_refuse_others() -> None:
    transport = transport_from_url("memory://options-hub?max_payload=4096&interest_delay=0.5")
    assert isinstance(transport, MemoryTransport)
    assert (transport.max_payload, transport.interest_delay) == (4096, 0.5)
    assert transport.hub is transport_from_url("memory://options-hub").hub  # type: ignore[attr-defined]
    assert transport_from_url("memory://?max_payload=10", max_payload=20).max_payload == 20
    for url, options, message in [
        ("memory://?bucket=x", {}, "unknown option 'bucket' for a memory:// transport"),
        ("memory://", {"prefix": "x"}, "unknown option 'prefix'.*interest_delay, max_payload"),
        ("memory://?max_payload=big", {}, "max_payload='big'"),
        ("memory://?max_payload", {}, "malformed"),
    ]:
        with pytest.raises(ValueError, match=message):
            transport_from_url(url, **options)
    with pytest.raises(ValueError, match="unknown option 'prefix'"):
        SessionRegistry("memory://?prefix=myapp")


def test_unknown_schemes_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known schemes: .*memory://.*nats://.*redis://"):
        transport_from_url("kafka://localhost")
    with pytest.raises(TypeError):
        transport_from_url(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("redis://localhost", "sessionws_redis", "redis"),
        ("rediss://localhost", "sessionws_redis", "redis"),
        ("redis+cluster://localhost", "sessionws_redis", "redis"),
        ("rediss+cluster://localhost", "sessionws_redis", "redis"),
        ("redis+sentinel://localhost/mymaster", "sessionws_redis", "redis"),
        ("rediss+sentinel://localhost/mymaster", "sessionws_redis", "redis"),
        ("nats://localhost", "sessionws_nats", "nats"),
    ],
)
def test_missing_broker_packages_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install 'sessionws\[{extra}\]'"):
        transport_from_url(url)


def test_third_party_transports_plug_in_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "carrier_pigeon.py"
    package.write_text(
        "from sessionws import MemoryTransport\n"
        "def make(url, **options):\n"
        "    transport = MemoryTransport()\n"
        "    transport.url = url\n"
        "    return transport\n"
    )
    dist = tmp_path / "carrier_pigeon-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: carrier-pigeon\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sessionws.transports]\npigeon = carrier_pigeon:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    transport = transport_from_url("pigeon://coop/7")
    assert getattr(transport, "url", None) == "pigeon://coop/7"
    assert "pigeon" in known_schemes()


def test_the_built_in_transports_are_registered_as_entry_points() -> None:
    ours = {
        entry.name: entry
        for entry in entry_points(group=ENTRY_POINT_GROUP)
        if entry.dist is not None and entry.dist.name == "sessionws"
    }
    assert sorted(ours) == [
        "nats",
        "redis",
        "redis+cluster",
        "redis+sentinel",
        "rediss",
        "rediss+cluster",
        "rediss+sentinel",
        "tls",
    ]
    assert {(entry.module, tuple(entry.extras)) for entry in ours.values()} == {
        ("sessionws_redis", ("redis",)),
        ("sessionws_nats", ("nats",)),
    }
    assert set(ours) < set(known_schemes())


def test_the_core_names_no_broker_package() -> None:
    core = Path(sessionws.__file__).parent
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert "sessionws_redis" not in text and "sessionws_nats" not in text, path


def test_a_plugin_that_cannot_import_names_its_own_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_transport_plugin(
        tmp_path,
        "sessionws-pigeon",
        "sessionws_pigeon",
        "import carrier_pigeon_client\n",
        {"pigeon": "sessionws_pigeon:make [pigeon]", "owl": "sessionws_pigeon:make"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ImportError,
        match=r"pigeon:// transport needs the 'pigeon' extra: pip install 'sessionws-pigeon\[pigeon\]'",
    ):
        transport_from_url("pigeon://coop")
    with pytest.raises(ImportError, match=r"owl:// transport \(sessionws_pigeon:make\) cannot be imported"):
        transport_from_url("owl://coop")


def test_a_plugin_cannot_take_a_built_in_scheme_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_transport_plugin(
        tmp_path,
        "redis-hijack",
        "redis_hijack",
        "def make(url, **options):\n    raise AssertionError('the plugin was used')\n",
        {"redis": "redis_hijack:make"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(transport_from_url("redis://localhost")).__name__ == "RedisTransport"


def test_public_names_are_exported_as_a_tuple() -> None:
    assert isinstance(sessionws.__all__, tuple)
    for name in sessionws.__all__:
        assert hasattr(sessionws, name)


def test_the_cli_prints_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sessionws", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"sessionws {sessionws.__version__}"
    script = Path(sys.executable).parent / "sessionws"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"sessionws {sessionws.__version__}"


async def test_using_the_registry_before_entering_it_says_how_to_fix_it() -> None:
    registry = SessionRegistry("memory://")
    with pytest.raises(sessionws.NotConfiguredError, match="async with registry"):
        await registry.close_all("k")
    assert not registry.healthy


def test_session_registry_implements_the_registry_protocol() -> None:
    registry: sessionws.Registry = SessionRegistry("memory://")
    assert isinstance(registry.healthy, bool)


async def test_an_event_callback_can_decline_per_socket_events() -> None:
    """``socket_events = False`` keeps the registration's short path (the metrics
    exporters' callbacks do this); every other event still arrives."""
    seen: list[str] = []

    class Sink:
        socket_events = False

        def __call__(self, event: Event) -> None:
            seen.append(event.name)

    async with SessionRegistry(MemoryTransport(MemoryHub()), on_event=Sink(), **FAST) as node:
        first = await node.register(RecordingConnection(), "s1")
        assert node._short_keys  # the short path is open
        second = await node.register(RecordingConnection(), "s1")
        await node.close_all("s1")
        await wait_for(lambda: first.closed and second.closed)
    assert "registered" not in seen and "unregistered" not in seen
    assert seen.count("closed") == 2
