"""The Docker files, without a Docker engine: linted, validated, and their runner path run.

* ``hadolint`` passes on both Dockerfiles; every compose file validates against the
  compose specification; every service is wired as the suite expects.
* The Docker runner's path: the three nodes are started here *from the compose file's
  own command and environment* (host names mapped to local brokers and ports), and the
  runner's own command runs a few cluster tests against them through ``SESSIONWS_NODES``
  (without the engine: the fault hooks are ``scripts/docker-suite``'s part, in CI).
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

from tests._ports import free_port
from tests._redis_servers import running_redis
from tests.cluster._cluster import nats_cluster
from tests.cluster._nodes import NodeProcess, start_nodes, stop_nodes

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
#: compose file -> its cluster kind (the runner's SESSIONWS_DOCKER_KIND).
COMPOSE_FILES = {
    "compose.cluster.yml": "redis",
    "compose.cluster.redis-cluster.yml": "redis-cluster",
    "compose.cluster.nats.yml": "nats",
    "compose.cluster.nats-cluster.yml": "nats-cluster",
}
#: The files whose runner path runs here (one broker of each family, the proxy included).
RUNNER_PATH_FILES = ("compose.cluster.yml", "compose.cluster.nats-cluster.yml")
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "base/Dockerfile"])
def test_hadolint_accepts_the_dockerfile(dockerfile: str) -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(DOCKER / dockerfile)],
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
    environment = runner["environment"]
    assert runner["command"][:6] == ["python", "-m", "pytest", "-m", "cluster", "tests/cluster"]
    assert environment["SESSIONWS_NODES"] == ",".join(f"http://{node}:8000" for node in NODES)
    assert {runner["depends_on"][node]["condition"] for node in NODES} == {"service_healthy"}
    # The fault hooks: the engine's socket, the broker's services, their data volumes.
    assert environment["SESSIONWS_DOCKER_KIND"] == COMPOSE_FILES[name]
    assert any(volume.endswith(":/var/run/docker.sock") for volume in runner["volumes"])
    brokers = environment["SESSIONWS_DOCKER_BROKERS"].split(",")
    for broker in brokers:
        assert "healthcheck" in services[broker], f"{broker} has no healthcheck"
        for volume in services[broker].get("volumes", []):
            source = volume.partition(":")[0]
            assert f"{source}:/brokers/{broker}" in runner["volumes"], f"the runner cannot empty {source}"
    frameworks = [services[node]["environment"].get("SESSIONWS_FRAMEWORK", "aiohttp") for node in NODES]
    assert frameworks == ["aiohttp", "starlette", "aiohttp"], "both adapters, one cluster"
    for node in NODES:
        service = services[node]
        assert service["command"] == ["python", "-m", "tests.cluster.node"]
        assert service["build"]["context"] == ".."
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert set(service["build"]["args"]) == {"PYTHON_IMAGE"}
        assert service["environment"]["SESSIONWS_NODE_NAME"] == node
        assert service["environment"]["SESSIONWS_PORT"] == "8000"
        assert "/health" in " ".join(service["healthcheck"]["test"])
        for dependency, condition in service["depends_on"].items():
            if "healthcheck" in services[dependency]:
                assert condition["condition"] == "service_healthy"
            else:  # a one-shot service (the Redis Cluster's init)
                assert condition["condition"] == "service_completed_successfully"
    if "SESSIONWS_DOCKER_PROXY" in environment:  # node 3 (PROXIED) reaches the broker through it
        assert "proxy" in services["node3"]["depends_on"]
        assert "proxy:" in services["node3"]["environment"]["SESSIONWS_BROKER_URL"]
    else:  # or is cut off inside its network namespace
        assert environment["SESSIONWS_DOCKER_CUT"] == "network", "node 3 cannot be cut off"
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


def _through_proxy(services: Mapping[str, Any], addresses: dict[str, str]) -> dict[str, str]:
    """The proxy's forwards (``4222=nats3:4222``) as addresses: here node 3 goes direct."""
    proxy = services.get("proxy")
    if proxy is None:
        return addresses
    forwards = [part for part in proxy["command"] if "=" in part]
    for forward in forwards:
        port, _, upstream = forward.partition("=")
        addresses = {**addresses, f"proxy:{port}": addresses[upstream]}
    return addresses


@pytest.mark.parametrize("name", RUNNER_PATH_FILES)
def test_the_docker_runner_path_runs_the_suite_against_nodes_it_did_not_start(
    name: str, tmp_path: Path
) -> None:
    services = _compose(name)["services"]
    with _brokers_for(name) as addresses:
        addresses = _through_proxy(services, addresses)
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
            # Without the engine: the runner treats the nodes as external (the fault
            # tests skip, saying why); scripts/docker-suite runs them with it.
            environment.update(
                {
                    key: _localize(str(value), addresses)
                    for key, value in runner["environment"].items()
                    if not key.startswith("SESSIONWS_DOCKER_")
                }
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
