"""Decoding's own threads and the gate for heavy requests (detect/admission.py)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from detect.admission import BUSY_RETRY_AFTER_S, DecodePool, WorkGate
from errors import BadMedia, ServiceUnavailable

pytestmark = pytest.mark.unit


def test_gate_admits_capacity_plus_queue_and_sheds_the_next():
    async def main() -> list[str]:
        gate = WorkGate("heavy requests", capacity=1, queue=1)
        release = anyio.Event()
        order: list[str] = []

        async def hold(name: str) -> None:
            async with gate.admit():
                order.append(f"{name} in")
                await release.wait()
                order.append(f"{name} out")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold, "a")
            await anyio.sleep(0.01)
            tasks.start_soon(hold, "b")  # waits for a's slot
            await anyio.sleep(0.01)
            assert gate.in_flight == 2 and order == ["a in"]
            with pytest.raises(ServiceUnavailable) as shed:
                async with gate.admit():
                    pass
            assert shed.value.code == "server_busy" and shed.value.status == 503
            assert shed.value.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
            release.set()
        assert gate.in_flight == 0
        async with gate.admit():  # free again
            order.append("c")
        return order

    assert anyio.run(main) == ["a in", "a out", "b in", "b out", "c"]


def test_decode_pool_runs_on_its_own_threads_and_never_more_than_its_size():
    pool = DecodePool(2)
    active, peak, names = 0, 0, set()
    lock = threading.Lock()

    def decode() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            names.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            active -= 1

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(6):
                tasks.start_soon(pool.run, decode)

    anyio.run(main)
    assert peak == 2 and all(name.startswith("decode") for name in names)
    assert pool.running == 0
    pool.shutdown()


def test_a_decode_past_its_limit_answers_at_once_and_keeps_its_slot_until_it_ends():
    pool = DecodePool(1)
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.5)
        finished.set()
        return "late"

    async def main() -> tuple[float, int]:
        started = time.monotonic()
        with pytest.raises(BadMedia) as late:
            await pool.run(
                slow, timeout_s=0.05, on_timeout=lambda: BadMedia("too slow", code="decode_timeout")
            )
        assert late.value.code == "decode_timeout"
        answered = time.monotonic() - started
        still_running = pool.running
        # The next decode waits for the abandoned one's thread: never two at once.
        assert await pool.run(lambda: finished.is_set()) is True
        return answered, still_running

    answered, still_running = anyio.run(main)
    assert answered < 0.3 and still_running == 1
    pool.shutdown()
