"""The Docker cluster's proxy service, run here as a process in front of a real Redis:
it forwards, ``/cut`` drops its connections and refuses new ones, ``/restore`` undoes it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests._ports import free_port
from tests._redis_servers import running_redis
from tests.cluster._docker import ProxyControl
from tests.cluster._nodes import get_json, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def proxied_redis(tmp_path: Path) -> Iterator[tuple[ProxyControl, str]]:
    """``(control, url)``: a proxy service forwarding a port to a fresh redis-server."""
    with running_redis() as server:
        port, control_port = free_port(), free_port()
        log = (tmp_path / "proxy.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tests.cluster.proxy_service",
                "--control", str(control_port), f"{port}={server.host}:{server.port}",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            control_url = f"http://127.0.0.1:{control_port}"
            wait_until(lambda: get_json(f"{control_url}/health")[0] == 200, 20, "the proxy service listening")
            yield ProxyControl(control_url), f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)
            log.close()
    assert process.returncode == 0, (tmp_path / "proxy.log").read_text()


def test_the_proxy_service_forwards_cuts_and_restores(proxied_redis: tuple[ProxyControl, str]) -> None:
    control, url = proxied_redis
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        assert client.ping()
        client.set("through", "the proxy")

        control.cut()

        assert get_json(f"{control.url}/health")[1]["cut"] is True
        with pytest.raises(redis.ConnectionError):
            client.get("through")  # the open connection was dropped, a new one is refused
        with redis.Redis.from_url(url, socket_timeout=5) as fresh, pytest.raises(redis.ConnectionError):
            fresh.ping()

        control.restore()

        assert client.get("through") == b"the proxy"  # reconnects through the proxy


def test_the_proxy_service_refuses_a_malformed_forward() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.cluster.proxy_service", "6379:redis"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "expected PORT=HOST:PORT, e.g. 6379=redis:6379" in result.stderr
