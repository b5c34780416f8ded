"""What ``bench.peers`` reports: ratios to the targets, tables, the docs page's block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._results import replace_doc_block
from bench.cluster import summary

__all__ = ("DOC_END", "DOC_START", "ratios", "system_result", "table", "write_doc")

DOC_START = "<!-- bench.peers: generated, do not edit by hand -->"
DOC_END = "<!-- /bench.peers -->"


def system_result(system: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "kind": system.kind,
        "broker": system.broker,
        "loop": system.loop,
        "sockets": {},
    }
    for per_node, rounds in system.rounds.items():
        result["sockets"][str(per_node)] = {
            metric: summary(values)
            for metric in sorted({name for one in rounds for name in one})
            if (values := [one[metric] for one in rounds if metric in one])
        }
    return result


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each as a ratio of figures of this run."""
    floors, systems = results["floors"], results["systems"]
    floor_p50 = floors["redis_publish"]["p50_ms"] + floors["websocket_close"]["p50_ms"]
    peer = systems.get("socketio-redis")
    out: dict[str, Any] = {"floor_redis_publish_plus_websocket_close_p50_ms": floor_p50}
    for name, system in systems.items():
        if system["kind"] != "sessionws":
            continue
        mine: dict[str, Any] = {}
        for per_node, measured in system["sockets"].items():
            last = measured["last"]
            entry: dict[str, float] = {}
            if per_node == "1":
                entry["p50_to_floor"] = last["p50_ms"] / floor_p50
                entry["node1_p50_to_websocket_close_p50"] = (
                    measured["node1"]["p50_ms"] / floors["websocket_close"]["p50_ms"]
                )
            if peer is not None and per_node in peer["sockets"]:
                theirs = peer["sockets"][per_node]["last"]
                entry["p50_to_socketio_p50"] = last["p50_ms"] / theirs["p50_ms"]
                entry["p99_to_socketio_p50"] = last["p99_ms"] / theirs["p50_ms"]
            mine[per_node] = entry
        out[name] = mine
    return out


def table(results: dict[str, Any]) -> str:
    floors, systems = results["floors"], results["systems"]
    rows = [
        "| what | sockets per node | p50 ms | p99 ms | node 1's own socket p50 | HTTP answer p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def floor_row(label: str, key: str, sockets: str) -> None:
        if key in floors:
            p50, p99 = floors[key]["p50_ms"], floors[key]["p99_ms"]
            rows.append(f"| floor: {label} | {sockets} | {p50:.2f} | {p99:.2f} | | |")

    floor_row("Redis publish → 3 subscribers", "redis_publish", "")
    floor_row("NATS publish → 3 subscribers", "nats_publish", "")
    floor_row("NATS KV put → 3 subscribers of its subject (one step)", "nats_kv_put_seen_by_subscribers", "")
    floor_row("NATS KV put, its ack, then publish → 3 subscribers", "nats_kv_put_then_publish", "")
    floor_row("one websocket close", "websocket_close", "1")
    sizes = sorted({int(size) for system in systems.values() for size in system["sockets"]})
    for size in sizes:
        floor_row(f"{3 * size} websockets closed by their nodes at once", f"raw_closes_{size}", str(size))
        for name, system in systems.items():
            measured = system["sockets"].get(str(size))
            if measured is None:
                continue
            last, node1, answer = measured["last"], measured["node1"], measured["http_returned"]
            rows.append(
                f"| **{name}** | {size} | {last['p50_ms']:.2f} | {last['p99_ms']:.2f} | "
                f"{node1['p50_ms']:.2f} | {answer['p50_ms']:.2f} |"
            )
    return "\n".join(rows + target_table(results) + trace_table(results) + profile_table(results))


def target_table(results: dict[str, Any]) -> list[str]:
    """The issue's targets as ratios of this run; the floor's own ratio shows the least
    any implementation could reach on this machine."""
    ratio, floors, systems = results["ratios"], results["floors"], results["systems"]
    peer = systems.get("socketio-redis")
    rows = [
        "",
        "| ratio (same run) | p50 / Socket.IO p50, 1 per node | p99 / Socket.IO p50, 1 per node | "
        "p50 / Socket.IO p50, 50 per node | p50 / floor, 1 per node |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(value: float | None, bound: float) -> str:
        if value is None:
            return ""
        return f"{value:.2f}x" + (" ✓" if value <= bound else "")

    for name, entry in ratio.items():
        if not isinstance(entry, dict):
            continue
        one, fifty = entry.get("1", {}), entry.get("50", {})
        bound = 0.5 if "redis" in name else 0.999  # Redis: at most half; NATS: ahead
        peer_one, peer_fifty = one.get("p50_to_socketio_p50"), fifty.get("p50_to_socketio_p50")
        rows.append(
            f"| {name} | {cell(peer_one, bound)} | {cell(one.get('p99_to_socketio_p50'), 0.999)} | "
            f"{cell(peer_fifty, bound)} | {cell(one.get('p50_to_floor'), 1.5)} |"
        )
    if peer is not None and "websocket_close" in floors and "1" in peer["sockets"]:
        floor = ratio["floor_redis_publish_plus_websocket_close_p50_ms"]
        least = floor / peer["sockets"]["1"]["last"]["p50_ms"]
        many = ""
        if "raw_closes_50" in floors and "50" in peer["sockets"]:
            floor_50 = floors["redis_publish"]["p50_ms"] + floors["raw_closes_50"]["p50_ms"]
            many = f"{floor_50 / peer['sockets']['50']['last']['p50_ms']:.2f}x"
        rows.append(f"| *the floor itself* | {least:.2f}x | | {many} | 1.00x |")
    rows.append("| *target* | ≤ 0.5x (Redis), < 1x (NATS) | < 1x | ≤ 0.5x (Redis), < 1x (NATS) | ≤ 1.5x |")
    return rows


def profile_table(results: dict[str, Any]) -> list[str]:
    """With ``--profile``: where node 1's CPU went on each path of a close."""
    profile = results.get("profile")
    if profile is None:
        return []
    rows = ["", f"py-spy on {profile['system']} node 1: {profile['samples']} samples in all."]
    for label, path in profile["paths"].items():
        rows += [
            "",
            f"| {label}: {path['samples']} samples | inclusive | | exclusive |",
            "|---|---:|---|---:|",
        ]
        for (inner, share), (outer, own) in zip(path["inclusive"], path["exclusive"], strict=False):
            rows.append(f"| {inner} | {share:.0%} | {outer} | {own:.0%} |")
    return rows


def trace_table(results: dict[str, Any]) -> list[str]:
    """With ``--trace``: the median time of each step of a close, from node 1's call."""
    rows: list[str] = []
    for name, system in results["systems"].items():
        for size, measured in system["sockets"].items():
            rounds = measured["last"]["n"]
            steps = sorted(  # steps seen in most rounds (not a heartbeat that fell in one)
                (
                    (metric, values)
                    for metric, values in measured.items()
                    if metric.startswith("trace: ") and values["n"] >= rounds / 2
                ),
                key=lambda item: item[1]["p50_ms"],
            )
            if not steps:
                continue
            rows += [
                "",
                f"| {name}, {size}/node: step (first of its kind) | p50 ms after the call | n |",
                "|---|---:|---:|",
            ]
            rows += [f"| {metric[7:]} | {values['p50_ms']:.3f} | {values['n']} |" for metric, values in steps]
            told = measured["node1"]["p50_ms"], measured["last"]["p50_ms"]
            rows.append(f"| (client of node 1 told / last client told) | {told[0]:.3f} / {told[1]:.3f} | |")
    return rows


def write_doc(path: Path, results: dict[str, Any]) -> None:
    meta = results["run"]
    block = (
        f"{DOC_START}\nRun {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, load average "
        f"{meta['load_average_at_end'][0]:.1f} at the end), Python {meta['python']}, "
        f"{meta['iterations']['1']} rounds with 1 socket per node, {meta['iterations']['50']} with 50.\n\n"
        f"{table(results)}\n{DOC_END}"
    )
    replace_doc_block(path, DOC_START, DOC_END, block)
