"""The in-process model client shares session runs between concurrent callers: rows that wait while
the session is busy go together in its next run, each caller gets exactly its own rows back, and a
lone caller runs at once. Real ONNX Runtime sessions of the tiny exported image model."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from detect.model_clients import InProcessModelClient, _Waiting

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def stored_image(model_store):
    from models.store import find_stored

    return find_stored("vit-dima806", "fp32")


def _client(stored, max_batch_rows: int = 32) -> tuple[InProcessModelClient, list[int]]:
    """A client whose session runs are counted (rows per run), the session itself untouched."""
    client = InProcessModelClient(
        stored.model_id, stored.onnx_path, intra_op_threads=1, max_batch_rows=max_batch_rows
    )
    runs: list[int] = []
    real_run = client.session.run

    def counted(batch: np.ndarray) -> np.ndarray:
        runs.append(len(batch))
        return real_run(batch)

    client.session.run = counted  # type: ignore[method-assign]
    return client, runs


def _rows(stored, count: int, seed: int) -> np.ndarray:
    height, width = stored.input_spec.size
    return np.random.default_rng(seed).normal(size=(count, 3, height, width)).astype(np.float32)


async def _queued_then_released(client: InProcessModelClient, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Every batch waits while the session is held, then the session is let go."""
    outputs: list[np.ndarray | None] = [None] * len(batches)

    async def call(index: int) -> None:
        outputs[index] = await client.predict(batches[index])

    async with anyio.create_task_group() as group:
        await client._one_run.acquire()
        for index in range(len(batches)):
            group.start_soon(call, index)
        with anyio.fail_after(10):
            while len(client._waiting) < len(batches):
                await anyio.sleep(0.005)
        client._one_run.release()
    return [o for o in outputs if o is not None]


def test_waiting_callers_share_one_run_and_get_their_own_rows(stored_image):
    client, runs = _client(stored_image)
    batches = [_rows(stored_image, n, seed) for seed, n in enumerate([1, 2, 1, 3, 1, 1])]
    expected = [client.session.run(b) for b in batches]  # alone, one run each
    runs.clear()

    outputs = anyio.run(_queued_then_released, client, batches)

    assert runs == [9]  # six callers, one session run
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert client._waiting == []


def test_runs_hold_at_most_max_batch_rows_and_never_split_a_caller(stored_image):
    client, runs = _client(stored_image, max_batch_rows=4)
    batches = [_rows(stored_image, n, seed) for seed, n in enumerate([3, 1, 1, 6, 2])]

    outputs = anyio.run(_queued_then_released, client, batches)

    # Oldest first: 3+1 fill a run, then 1 alone (adding 6 would pass 4), 6 whole, then 2.
    assert runs == [4, 1, 6, 2]
    assert [len(o) for o in outputs] == [3, 1, 1, 6, 2]


def test_a_lone_caller_runs_at_once(stored_image):
    client, runs = _client(stored_image)
    batch = _rows(stored_image, 2, seed=7)

    output = anyio.run(client.predict, batch)

    assert runs == [2] and output.shape[0] == 2


def test_a_failed_run_reaches_its_callers_and_spares_the_others(stored_image):
    client, _ = _client(stored_image)
    good = _rows(stored_image, 1, seed=1)
    wrong_size = np.zeros((1, 3, 7, 7), np.float32)  # stacks with nothing else, fails in ORT

    async def both() -> tuple[object, object]:
        results: dict[str, object] = {}

        async def call(name: str, batch: np.ndarray) -> None:
            try:
                results[name] = await client.predict(batch)
            except Exception as exc:
                results[name] = exc

        async with anyio.create_task_group() as group:
            await client._one_run.acquire()
            group.start_soon(call, "bad", wrong_size)
            group.start_soon(call, "good", good)
            while len(client._waiting) < 2:
                await anyio.sleep(0.005)
            client._one_run.release()
        return results["bad"], results["good"]

    bad, good_output = anyio.run(both)

    assert isinstance(bad, Exception)
    assert isinstance(good_output, np.ndarray) and good_output.shape[0] == 1
    assert client._waiting == []


def test_a_caller_cancelled_while_waiting_leaves_nothing_queued(stored_image):
    client, runs = _client(stored_image)

    async def cancelled() -> None:
        async def waits_then_gives_up() -> None:
            with anyio.move_on_after(0.05):
                await client.predict(_rows(stored_image, 1, seed=3))

        await client._one_run.acquire()
        async with anyio.create_task_group() as group:
            group.start_soon(waits_then_gives_up)
        client._one_run.release()

    anyio.run(cancelled)

    assert client._waiting == [] and runs == []


def test_rows_of_another_shape_wait_for_a_run_of_their_own():
    client = object.__new__(InProcessModelClient)
    client.max_batch_rows = 32
    client._lock = threading.Lock()
    small = [_Waiting(np.zeros((1, 4), np.float32)) for _ in range(2)]
    large = _Waiting(np.zeros((1, 8), np.float32))
    client._waiting = [small[0], large, small[1]]

    assert client._next_group(large) == small  # the oldest rows' shape first, skipping the other
    assert client._next_group(large) == [large]
    assert client._waiting == []
