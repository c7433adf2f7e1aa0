"""SIGKILL the consumer process mid-stream, several times, and restart it: afterwards nothing is
missing and no event reached Metrica twice (each order's history is exactly its status walk)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until


def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    stream = crm.build(deals=400, steps=3, seed=11)
    names = topics.crm_topics(3)
    rng = random.Random(5)
    log = tmp_path / "service.log"
    # Slow Metrica down so kills land while uploads are in flight.
    sandbox.set_faults(latency_ms=100)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        batch_max_records=40,
        batch_linger_ms=100,
        commit_interval_ms=100,
        # About 4 uploads a second: each phase takes several seconds, so kills land mid-stream.
        metrica_requests_per_second=4,
    )

    def crash_once(total: int) -> None:
        service = ServiceProcess(env, log).start()
        time.sleep(rng.uniform(5.0, 7.0))  # includes ~3 s to join the groups
        service.kill()
        done = sum(map(len, crm.histories(sandbox.orders(COUNTER)).values()))
        kills.append((done, total))

    def settle(expected: dict[str, list[str]]) -> dict[str, list[str]]:
        service = ServiceProcess(env, log).start()
        try:
            wait_until(
                lambda: _done(crm.histories(sandbox.orders(COUNTER)), expected),
                120,
                "every order's history",
                poll=1.0,
            )
        finally:
            assert service.terminate() == 0, service.logs()[-3000:]
        return crm.histories(sandbox.orders(COUNTER))

    # Leads first (one crash among them): the lead must create each order before its
    # status walk, or the lead's initial status is rightly stale and the history differs.
    kills: list[tuple[int, int]] = []
    crm.produce(bootstrap, names, stream, statuses=False)
    crash_once(len(stream.expected))
    created = settle({deal: ["new"] for deal in stream.expected})
    assert created == {deal: ["new"] for deal in stream.expected}

    crm.produce(bootstrap, names, stream, leads=False)
    total = sum(map(len, stream.expected.values()))
    crash_once(total)
    crash_once(total)
    got = settle(stream.expected)
    # Each kill landed mid-stream: some of the phase was in Metrica, not all of it.
    assert all(0 < done < total for done, total in kills[:2]), kills
    wrong = {d: (got.get(d), h) for d, h in stream.expected.items() if got.get(d) != h}
    assert not wrong, f"{len(wrong)} orders differ, e.g. {list(wrong.items())[:3]}"


def _done(got: dict[str, list[str]], expected: dict[str, list[str]]) -> bool:
    """All there, or some order already has more history than it can ever legitimately get."""
    return got == expected or any(len(got.get(d, [])) > len(h) for d, h in expected.items())
