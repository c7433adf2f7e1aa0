"""The batcher: count, bytes and linger; one id per upload; acks complete exactly their records;
Nagle's rule keeps uploads large under a backlog."""

from __future__ import annotations

import asyncio
import time

from metrica_bridge.steps.batch import Ack, Batcher, Endpoint, Pending


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[Endpoint, list[str]]] = []
        self.delay = delay

    async def __call__(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        self.batches.append((endpoint, [p.record_id for p in batch]))
        await asyncio.sleep(self.delay)
        ack = Ack(f"u{len(self.batches)}", len(batch), time.time())
        for pending in batch:
            for future in pending.futures:
                future.set_result(ack)


async def test_flushes_on_count_and_on_linger() -> None:
    sent = Recorder()
    batcher = Batcher(sent, max_records=3, max_bytes=10**6, linger_s=0.05)
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
    batcher = Batcher(sent, max_records=100, max_bytes=1_000, linger_s=30)
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
    batcher = Batcher(sent, max_records=10, max_bytes=10**6, linger_s=0.02)
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
    batcher = Batcher(sent, max_records=1_000, max_bytes=10**7, linger_s=0.0)
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
