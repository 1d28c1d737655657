"""The soak driver's own logic (bench/soak.py): its verdict on RSS and what its mix covers. The
soak itself runs against a served API (`make soak`), not in `make test`."""

from __future__ import annotations

import pytest

from bench.soak import calls, rss_verdict

pytestmark = pytest.mark.unit


def test_rss_verdict_compares_the_first_and_last_tenth_after_warm_up():
    flat = [(float(t), 1000.0 + (t % 3)) for t in range(200)]
    assert rss_verdict(flat, warmup_s=20, tolerance=0.05)["flat"] is True
    growing = [(float(t), 1000.0 + 2 * t) for t in range(200)]
    verdict = rss_verdict(growing, warmup_s=20, tolerance=0.05)
    assert verdict["flat"] is False and verdict["growth"] > 0.05
    # Warm-up growth does not count; too few samples after it give no verdict.
    warming = [(float(t), 500.0 + 5 * t if t < 50 else 750.0) for t in range(200)]
    assert rss_verdict(warming, warmup_s=50, tolerance=0.05)["flat"] is True
    assert rss_verdict(flat[:10], warmup_s=0, tolerance=0.05)["flat"] is None


def test_the_mix_has_every_kind_of_load_the_soak_promises():
    inputs = {"jpeg": b"j", "wav": b"w", "mp4": b"m" * 5000, "random": b"r", "bomb": b"b"}
    routes = {call.route for call in calls(inputs)}
    assert {"image", "image explain", "audio", "video", "login flood", "history", "usage"} <= routes
    assert sum(route.startswith("hostile") for route in routes) >= 4
    assert all(call.weight > 0 for call in calls(inputs))
