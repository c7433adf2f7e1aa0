"""The batcher: count, bytes and linger; one id per upload; acks complete exactly their records;
Nagle's rule keeps uploads large under a backlog; every record of an upload is settled."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from metrica_bridge.steps.batch import Ack, Batcher, Endpoint, Pending, RequestLimits


class Recorder:
    """A fake Metrica: acknowledges every upload after ``delay``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[Endpoint, list[str]]] = []
        self.bodies: list[bytes] = []
        self.delay = delay

    async def __call__(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        self.batches.append((endpoint, [p.record_id for p in batch]))
        self.bodies.append(b"[" + b",".join(p.encoded for p in batch) + b"]")
        await asyncio.sleep(self.delay)
        ack = Ack(f"u{len(self.batches)}", len(batch), time.time())
        for pending in batch:
            pending.result = ack


class Waiting:
    """The batcher with a future per submitted record, resolved when its upload settles."""

    def __init__(self, send: Any, **limits: Any) -> None:
        self.settled: list[tuple[Endpoint, list[str]]] = []
        self.batcher = Batcher(send, on_settled=self._settled, **limits)

    def _settled(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        self.settled.append((endpoint, [p.record_id for p in batch]))
        for pending in batch:
            for future in pending.waiters:
                if isinstance(pending.result, Ack):
                    future.set_result(pending.result)
                else:
                    future.set_exception(pending.result)

    def deadline(self, consumed_at: float | None = None) -> float:
        return self.batcher.deadline(consumed_at)

    async def submit(
        self, endpoint: Endpoint, record_id: str, record: dict[str, Any], deadline: float
    ) -> Ack:
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self.batcher.submit(endpoint, record_id, record, deadline, future)
        return await future

    def flush_soon(self) -> None:
        self.batcher.flush_soon()

    async def close(self) -> None:
        await self.batcher.close()


async def test_flushes_on_count_and_on_linger() -> None:
    sent = Recorder()
    batcher = Waiting(sent, max_records=3, max_bytes=10**6, linger_s=0.05)
    now = time.monotonic()
    acks = await asyncio.gather(
        *(
            batcher.submit(Endpoint.ORDERS, f"o{i}", {"id": i}, batcher.deadline(now))
            for i in range(4)
        )
    )
    assert sent.batches == [(Endpoint.ORDERS, ["o0", "o1", "o2"]), (Endpoint.ORDERS, ["o3"])]
    assert [a.uploading_id for a in acks] == ["u1", "u1", "u1", "u2"]
    await batcher.close()


async def test_flushes_on_bytes_and_never_exceeds_them() -> None:
    sent = Recorder()
    batcher = Waiting(sent, max_records=100, max_bytes=1_000, linger_s=30)
    big = {"pad": "x" * 400}  # ~411 bytes each
    deadline = batcher.deadline()
    tasks = [
        asyncio.ensure_future(batcher.submit(Endpoint.ORDERS, f"o{i}", big, deadline))
        for i in range(3)
    ]
    # Long before the linger: the third record made the batch too big to wait.
    await asyncio.wait_for(asyncio.gather(*tasks[:2]), timeout=5)
    assert sent.batches == [(Endpoint.ORDERS, ["o0", "o1"])]
    assert not tasks[2].done()
    batcher.flush_soon()
    await asyncio.wait_for(tasks[2], timeout=5)
    await batcher.close()


async def test_one_order_id_per_upload_and_contacts_coalesce() -> None:
    sent = Recorder()
    batcher = Waiting(sent, max_records=10, max_bytes=10**6, linger_s=0.02)
    d = batcher.deadline()
    await asyncio.gather(
        batcher.submit(Endpoint.ORDERS, "o1", {"v": 1}, d),
        batcher.submit(Endpoint.ORDERS, "o1", {"v": 2}, d),
        batcher.submit(Endpoint.CONTACTS, "c1", {"v": 1}, d),
        batcher.submit(Endpoint.CONTACTS, "c1", {"v": 2}, d),
    )
    orders = [ids for e, ids in sent.batches if e is Endpoint.ORDERS]
    contacts = [ids for e, ids in sent.batches if e is Endpoint.CONTACTS]
    assert orders == [["o1"], ["o1"]]  # never twice in one upload
    assert contacts == [["c1"]]  # the newer contact replaced the waiting one
    await batcher.close()


async def test_overdue_records_wait_for_the_upload_in_flight() -> None:
    """Under a backlog every record is already due; uploads must still grow."""
    sent = Recorder(delay=0.05)
    batcher = Waiting(sent, max_records=1_000, max_bytes=10**7, linger_s=0.0)
    overdue = time.monotonic() - 1

    tasks = []
    for i in range(200):
        tasks.append(
            asyncio.ensure_future(batcher.submit(Endpoint.ORDERS, f"o{i}", {"i": i}, overdue))
        )
        await asyncio.sleep(0.001)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert len(sent.batches) < 20, [len(ids) for _, ids in sent.batches]
    await batcher.close()


async def test_a_failed_upload_settles_every_record_with_its_error() -> None:
    async def broken(endpoint: Endpoint, batch: list[Pending]) -> None:
        raise ConnectionError("the store went away")

    batcher = Waiting(broken, max_records=10, max_bytes=10**6, linger_s=0.0)
    d = batcher.deadline()
    results = await asyncio.gather(
        batcher.submit(Endpoint.ORDERS, "o1", {"v": 1}, d),
        batcher.submit(Endpoint.ORDERS, "o2", {"v": 2}, d),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert batcher.settled == [(Endpoint.ORDERS, ["o1", "o2"])]
    await batcher.close()


async def test_records_are_encoded_once_and_the_body_is_valid_json() -> None:
    sent = Recorder()
    batcher = Waiting(sent, max_records=10, max_bytes=10**6, linger_s=0.0)
    d = batcher.deadline()
    record = {"id": "D-1", "name": "Иван", "revenue": 12.5}
    await asyncio.gather(
        batcher.submit(Endpoint.ORDERS, "o1", record, d),
        batcher.submit(Endpoint.ORDERS, "o2", {"id": "D-2"}, d),
    )
    assert json.loads(sent.bodies[0]) == [record, {"id": "D-2"}]
    assert "Иван".encode() in sent.bodies[0]  # UTF-8, not \u escapes: sizes are real bytes
    await batcher.close()


async def test_a_waiter_joins_a_contact_already_waiting() -> None:
    sent = Recorder()
    waiters: list[list[Any]] = []

    def settled(endpoint: Endpoint, batch: list[Pending]) -> None:
        waiters.extend(p.waiters for p in batch)

    batcher = Batcher(sent, on_settled=settled, max_records=10, max_bytes=10**6, linger_s=0.05)
    first = batcher.submit(Endpoint.CONTACTS, "c1", {"v": 1}, batcher.deadline(), "a")
    second = batcher.submit(Endpoint.CONTACTS, "c1", {"v": 2}, batcher.deadline(), "b")
    assert second is first  # merged: one record, the newer version, both waiters
    first.waiters.append("c")
    await asyncio.sleep(0.2)
    assert waiters == [["a", "b", "c"]]
    assert json.loads(sent.bodies[0]) == [{"v": 2}]
    await batcher.close()


class Pace:
    """A stand-in for the governor's pace: holds every request until ``open()``."""

    def __init__(self) -> None:
        self.until = float("inf")

    def open(self) -> None:
        self.until = 0.0

    def __call__(self) -> float:
        return max(0.0, self.until - time.monotonic())


async def test_the_pace_holds_a_ready_batch_and_it_grows_to_the_largest_request() -> None:
    sent = Recorder()
    pace = Pace()
    limits = RequestLimits(records=250, bytes=10**7)
    batcher = Waiting(
        sent, max_records=10, max_bytes=10**6, linger_s=0.0, limits=limits, pace_delay=pace
    )
    overdue = time.monotonic() - 1
    tasks = [
        asyncio.ensure_future(batcher.submit(Endpoint.ORDERS, f"o{i}", {"i": i}, overdue))
        for i in range(600)
    ]
    await asyncio.sleep(0.2)
    assert sent.batches == []  # full and due, but the pace says not yet
    pace.open()
    batcher.batcher._wake[Endpoint.ORDERS].set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    sizes = [len(ids) for _, ids in sent.batches]
    assert sizes[:2] == [250, 250]  # as large as a request may be, not BATCH_MAX_RECORDS
    assert sum(sizes) == 600
    await batcher.close()


async def test_while_the_budget_is_ample_the_pace_is_not_in_the_way() -> None:
    sent = Recorder()
    batcher = Waiting(sent, max_records=10, max_bytes=10**6, linger_s=0.05, pace_delay=lambda: 0.0)
    started = time.monotonic()
    await batcher.submit(Endpoint.CONTACTS, "c1", {"v": 1}, batcher.deadline())
    assert time.monotonic() - started < 0.5  # left on the linger
    await batcher.close()


async def test_unpaced_batches_stay_at_max_records_and_paced_ones_only_until_caught_up() -> None:
    sent = Recorder()
    pace = Pace()
    pace.open()
    limits = RequestLimits(records=250, bytes=10**7)
    batcher = Waiting(
        sent, max_records=10, max_bytes=10**6, linger_s=0.0, limits=limits, pace_delay=pace
    )
    overdue = time.monotonic() - 1
    await asyncio.wait_for(
        asyncio.gather(
            *(batcher.submit(Endpoint.ORDERS, f"a{i}", {"i": i}, overdue) for i in range(35))
        ),
        timeout=5,
    )
    assert max(len(ids) for _, ids in sent.batches) == 10
    pace.until = time.monotonic() + 0.2  # held once: the backlog leaves in large requests
    await asyncio.wait_for(
        asyncio.gather(
            *(batcher.submit(Endpoint.ORDERS, f"b{i}", {"i": i}, overdue) for i in range(300))
        ),
        timeout=5,
    )
    caught_up = len(sent.batches)
    assert [len(ids) for _, ids in sent.batches[caught_up - 2 :]] == [250, 50]
    await asyncio.wait_for(
        asyncio.gather(
            *(batcher.submit(Endpoint.ORDERS, f"c{i}", {"i": i}, overdue) for i in range(35))
        ),
        timeout=5,
    )
    assert max(len(ids) for _, ids in sent.batches[caught_up:]) == 10  # back to normal
    await batcher.close()


def test_a_request_refused_as_too_large_halves_the_limits() -> None:
    limits = RequestLimits(records=10_000, bytes=10_000_000)
    limits.learn_too_large(records=6_000, size=3_000_000)
    assert (limits.records, limits.bytes) == (3_000, 1_500_000)
    limits.learn_too_large(records=1, size=2_000_000)  # one record alone: only the bytes
    assert (limits.records, limits.bytes) == (3_000, 1_000_000)
