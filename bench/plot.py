"""Every benchmark's ratio to its floor, as one SVG chart (no plotting library needed).

    .venv/bin/python -m bench.plot [--results bench/results] [--out docs/images/benchmarks.svg]

Reads the JSON the benchmarks wrote and draws one bar per figure: how many times its
floor (measured in the same run) it costs, on a logarithmic axis from 1x, with the
target where a figure has one. A result file that is missing is left out.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WIDTH, LABEL_WIDTH, ROW, TOP = 860, 430, 26, 48
AXIS_MAX = 32.0  # the right end of the axis (1x .. 32x); longer bars are cut, their value still shown


@dataclass(frozen=True)
class Bar:
    label: str
    ratio: float
    target: float | None = None


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def bars(results: Path) -> list[Bar]:
    found: list[Bar] = []
    if register := _load(results / "register.json"):
        ratio = register.get("ratio_median_of_pairs", register["ratio"])
        found.append(Bar("register + unregister, local (median of pairs)", ratio, 5.0))
    if cluster := _load(results / "cluster.json"):
        for kind, result in cluster["brokers"].items():
            for per_node, latency in result["close_all"].items():
                if "ratio_p50_to_floor_with_raw_closes" in latency:
                    label = f"{kind}: close_all p50, {per_node}/node (vs publish + raw closes)"
                    found.append(Bar(label, latency["ratio_p50_to_floor_with_raw_closes"]))
                else:
                    target = 2.0 if kind == "redis" else None
                    found.append(
                        Bar(f"{kind}: close_all p50, {per_node} socket/node", latency["ratio_p50"], target)
                    )
            register_rate = result["register"]["ratio_one_node_to_floor"]
            found.append(Bar(f"{kind}: register new keys, time per socket", 1 / register_rate))
    if memory := _load(results / "memory.json"):
        for shape, measured in memory["shapes"].items():
            found.append(Bar(f"memory per connection, shape {shape}", measured["ratio"]))
    if storm := _load(results / "revoke_storm.json"):
        for kind, by_flight in storm["brokers"].items():
            for in_flight, measured in by_flight.items():
                found.append(
                    Bar(f"{kind}: revoke storm total, {in_flight} in flight", measured["ratio_total"])
                )
    return found


def _x(ratio: float) -> float:
    span = WIDTH - LABEL_WIDTH - 70
    return LABEL_WIDTH + span * min(math.log2(max(ratio, 1.0)), math.log2(AXIS_MAX)) / math.log2(AXIS_MAX)


def svg(found: list[Bar], title: str) -> str:
    height = TOP + ROW * len(found) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    bottom = TOP + ROW * len(found)
    for tick in (1, 2, 4, 8, 16, 32):
        x = _x(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{tick}x</text>')
    for index, bar in enumerate(found):
        y = TOP + ROW * index
        over = bar.target is not None and bar.ratio > bar.target
        colour = "#c0392b" if over else "#2e86c1"
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 15}" text-anchor="end">{html.escape(bar.label)}</text>'
        )
        parts.append(
            f'<rect x="{LABEL_WIDTH}" y="{y + 4}" width="{_x(bar.ratio) - LABEL_WIDTH:.1f}" '
            f'height="{ROW - 8}" fill="{colour}"/>'
        )
        value_x = max(_x(bar.ratio), _x(bar.target) if bar.target is not None else 0.0) + 4
        parts.append(f'<text x="{value_x:.1f}" y="{y + 15}">{bar.ratio:.2f}x</text>')
        if bar.target is not None:
            x = _x(bar.target)
            parts.append(
                f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" y2="{y + ROW - 1}" '
                'stroke="black" stroke-width="2"/>'
            )
    parts.append(
        f'<text x="10" y="{TOP - 12}" fill="#555">times the floor measured in the same run '
        "(log scale; black mark: target; red: over its target)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=Path("docs/images/benchmarks.svg"))
    options = parser.parse_args()
    found = bars(options.results)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(svg(found, "sessionws benchmarks: cost against the floor"))
    print(f"{len(found)} figures drawn in {options.out}")


if __name__ == "__main__":
    main()
