"""Hand-built streams where the same deals get status changes AND payments, with late events
(``occurred_at`` older than an event already produced for the deal on that topic) and exact
duplicates (the same bytes re-sent), and the Metrica state each deal must end in.

The expected state follows DESIGN.md §3/§4 and holds however the two topics interleave:
* final status: the mapped status of the deal's newest (occurred_at, version) update, a payment
  counting as the paid status (``won``);
* revenue: the deal's amount when a status change carried it, else the sum of its distinct
  payments, else none;
* history: a subsequence of the statuses of the lead and the updates sorted by
  (occurred_at, version); see :func:`tests.support.oracle.is_subsequence`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.kafka.producer import Producer
from tests.support.crm import DEAL, LEAD, STATUSES

PAYMENT = "crm.events.PaymentReceived"
PAID = "won"
CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")


@dataclass
class Expected:
    client: str
    client_id: str
    final: str
    revenue: Decimal | None
    ordered: list[str]  # statuses of the lead and every update, by (occurred_at, version)
    updates: int  # distinct update events (status changes and payments)


@dataclass
class MixedStream:
    # (key, encoded value, event_id) in production order; duplicates appear twice
    leads: list[tuple[str, bytes, str]] = field(default_factory=list)
    statuses: list[tuple[str, bytes, str]] = field(default_factory=list)
    payments: list[tuple[str, bytes, str]] = field(default_factory=list)
    expected: dict[str, Expected] = field(default_factory=dict)
    late: int = 0  # updates produced after a newer update of their deal on the same topic
    duplicates: int = 0  # records re-sent with the same bytes

    def event_ids(self) -> set[str]:
        return {e for _, _, e in self.leads + self.statuses + self.payments}


def lead_record(
    n: int, deal: str | None, client: str, at: datetime, client_id: str | None
) -> dict[str, Any]:
    return {
        "event_id": f"lead-{n}",
        "occurred_at": at,
        "lead_id": f"L{n:05d}",
        "deal_id": deal,
        "client": {"uniq_id": client, "name": None, "phones": [], "emails": []},
        "metrica_client_id": client_id,
        "yclid": None,
        "utm": None,
        "consent": True,
    }


def status_record(
    event_id: str,
    deal: str,
    client: str,
    created: datetime,
    at: datetime,
    status: str,
    *,
    revenue: Decimal | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "deal_id": deal,
        "client_uniq_id": client,
        "deal_created_at": created,
        "status": status,
        "revenue": revenue,
        "cost": None,
        "currency": "RUB",
        "products": [],
        "version": version,
    }


def payment_record(
    event_id: str,
    payment_id: str,
    deal: str,
    client: str,
    created: datetime,
    at: datetime,
    amount: Decimal,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "payment_id": payment_id,
        "deal_id": deal,
        "client_uniq_id": client,
        "amount": amount,
        "currency": "RUB",
        "deal_created_at": created,
    }


def build(
    deals: int,
    updates: int = 6,
    *,
    seed: int = 3,
    late: float = 0.25,
    duplicates: float = 0.1,
    with_amount: float = 0.5,
) -> MixedStream:
    """``deals`` deals, each a lead then ``updates`` status changes or payments a minute apart.

    Half the deals (``with_amount``) have an amount that every status change carries."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    stream = MixedStream()
    for n in range(deals):
        deal, client, client_id = f"D{n:05d}", f"C{n:05d}", str(10**18 + n)
        created = start + timedelta(seconds=n)
        lead = lead_record(n, deal, client, created, client_id)
        stream.leads.append((f"L{n:05d}", CODEC.encode(LEAD, lead), lead["event_id"]))
        amount = Decimal(rng.randrange(1_000, 90_000)) / 100 if rng.random() < with_amount else None
        keyed: list[tuple[tuple[datetime, int], str]] = []
        statuses: list[tuple[str, bytes, str]] = []
        payments: list[tuple[str, bytes, str]] = []
        paid: dict[str, Decimal] = {}
        previous = "new"
        for step in range(1, updates + 1):
            at = created + timedelta(minutes=step)
            event_id = f"{deal}-u{step}"
            if rng.random() < 0.4:
                payment_id = f"P-{deal}-{step}"
                paid[payment_id] = Decimal(rng.randrange(100, 50_000)) / 100
                record = payment_record(
                    event_id, payment_id, deal, client, created, at, paid[payment_id]
                )
                payments.append((deal, CODEC.encode(PAYMENT, record), event_id))
                keyed.append(((at, -1), PAID))
                previous = PAID
                continue
            status = rng.choice([s for s in STATUSES if s != previous])
            previous = status
            record = status_record(
                event_id, deal, client, created, at, status, revenue=amount, version=step
            )
            statuses.append((deal, CODEC.encode(DEAL, record), event_id))
            keyed.append(((at, step), status))
        carried_amount = amount is not None and len(statuses) > 0
        stream.late += _make_late(statuses, rng, late) + _make_late(payments, rng, late)
        stream.duplicates += _duplicate(statuses, rng, duplicates)
        stream.duplicates += _duplicate(payments, rng, duplicates)
        stream.statuses.extend(statuses)
        stream.payments.extend(payments)
        ordered = ["new"] + [status for _, status in sorted(keyed)]
        stream.expected[deal] = Expected(
            client=client,
            client_id=client_id,
            final=max(keyed)[1],
            revenue=amount
            if carried_amount
            else (sum(paid.values(), Decimal(0)) if paid else None),
            ordered=ordered,
            updates=len(keyed),
        )
    # Deals interleave on each topic the way a CRM's outbox would send them.
    for records in (stream.statuses, stream.payments):
        _interleave(records, rng)
    return stream


def _make_late(records: list[tuple[str, bytes, str]], rng: random.Random, p: float) -> int:
    """Swap neighbours: the older one is produced after the newer one."""
    late = 0
    i = 0
    while i + 1 < len(records):
        if rng.random() < p:
            records[i], records[i + 1] = records[i + 1], records[i]
            late += 1
            i += 2
        else:
            i += 1
    return late


def _duplicate(records: list[tuple[str, bytes, str]], rng: random.Random, p: float) -> int:
    """Re-send some records (same bytes) somewhere after the original, like an outbox retry."""
    count = 0
    for record in list(records):
        if rng.random() < p:
            at = records.index(record) + 1
            records.insert(rng.randint(at, len(records)), record)
            count += 1
    return count


def _interleave(records: list[tuple[str, bytes, str]], rng: random.Random) -> None:
    """Shuffle deals into each other while keeping each deal's own order."""
    by_deal: dict[str, list[tuple[str, bytes, str]]] = {}
    for record in records:
        by_deal.setdefault(record[0], []).append(record)
    queues = [list(reversed(q)) for q in by_deal.values()]
    out: list[tuple[str, bytes, str]] = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop())
        if not queue:
            queues.remove(queue)
    records[:] = out


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes, str]]) -> None:
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        for key, value, _ in records:
            producer.send(topic, key.encode(), value)
        producer.flush()


def status_steps(history: list[str]) -> list[str]:
    """An order's history without consecutive repeats. A late payment or a late deal amount is
    sent with the status the order already has (the revenue changes, the status must not go
    back), which repeats that status: a repeat, not a step backwards."""
    return [status for i, status in enumerate(history) if i == 0 or history[i - 1] != status]
