"""The campaign history's reading of how long a node has been silent."""

from __future__ import annotations

from tests.faults._history import History


def _span(history: History, actor: str, what: str, target: str, start: float, end: float | None) -> None:
    entry = history.begin(actor, what, target)
    entry.start, entry.end = start, end


def test_silent_since_chains_faults_and_the_watch_that_cover_the_moment() -> None:
    history = History(1, "nats-cluster")
    _span(history, "nemesis", "nats-failover", "n1", 7.6, 12.6)  # every node's link
    _span(history, "watch", "away", "node1", 7.7, 16.2)  # node 1 not ready until 16.2
    _span(history, "nemesis", "node-pause", "node1", 13.6, 15.6)
    _span(history, "nemesis", "node-pause", "node2", 1.0, 14.0)  # another node: not counted
    assert history.silent_since("node1", 14.7) == 7.6
    assert history.silent_since("node3", 12.0) == 7.6  # the failover reached every node
    assert history.silent_since("node3", 14.7) == 14.7
    assert history.silent_since("node1", 17.0) == 17.0  # beating again by then


def test_a_gap_longer_than_a_beat_breaks_the_silence() -> None:
    history = History(1, "redis")
    _span(history, "nemesis", "node-pause", "node2", 1.0, 3.0)
    _span(history, "nemesis", "node-cut", "node2", 4.0, 6.0)
    _span(history, "watch", "away", "node2", 5.9, None)  # still away
    assert history.silent_since("node2", 7.0) == 4.0
    _span(history, "nemesis", "node-kill", "node2", 3.1, 4.1)
    assert history.silent_since("node2", 7.0) == 1.0
    _span(history, "nemesis", "broker-pause", "broker", 0.5, 0.6)  # skipped faults aside
    assert history.silent_since("node2", 7.0) == 1.0
