"""Hand-built CRM streams with an exact expected outcome, for the engine's hard tests (crash,
rebalance, ordering). Every deal gets a lead (with a ClientID) and a walk of distinct statuses
with increasing ``occurred_at`` and ``version``, so its Metrica history is known in advance."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import yaml

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.metrica.status_map import parse_status_map
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN

STATUSES = ("qualified", "won", "lost", "junk")
LEAD = "crm.events.LeadCreated"
DEAL = "crm.events.DealStatusChanged"
_CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")


@dataclass
class Stream:
    leads: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    expected: dict[str, list[str]] = field(default_factory=dict)  # deal -> history

    @property
    def events(self) -> int:
        return len(self.leads) + len(self.statuses)


def build(deals: int, steps: int = 3, seed: int = 7) -> Stream:
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    stream = Stream()
    for n in range(deals):
        deal, client = f"D{n:05d}", f"C{n:05d}"
        created = start + timedelta(seconds=n)
        stream.leads.append(
            (
                f"L{n:05d}",
                {
                    "event_id": f"lead-{n}",
                    "occurred_at": created,
                    "lead_id": f"L{n:05d}",
                    "deal_id": deal,
                    "client": {"uniq_id": client, "name": None, "phones": [], "emails": []},
                    "metrica_client_id": str(10**18 + n),
                    "yclid": None,
                    "utm": None,
                    "consent": True,
                },
            )
        )
        history, previous = ["new"], "new"
        for step in range(1, steps + 1):
            status = rng.choice([s for s in STATUSES if s != previous])
            previous = status
            history.append(status)
            stream.statuses.append(
                (
                    deal,
                    {
                        "event_id": f"status-{n}-{step}",
                        "occurred_at": created + timedelta(minutes=step),
                        "deal_id": deal,
                        "client_uniq_id": client,
                        "deal_created_at": created,
                        "status": status,
                        "revenue": Decimal("100.00") * step if status == "won" else None,
                        "cost": None,
                        "currency": None,
                        "products": [],
                        "version": step,
                    },
                )
            )
        stream.expected[deal] = history
    return stream


def produce(
    bootstrap: str,
    topics: dict[str, str],
    stream: Stream,
    *,
    leads: bool = True,
    statuses: bool = True,
) -> None:
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        send(producer, topics, stream, leads=leads, statuses=statuses)


def send(
    producer: Producer,
    topics: dict[str, str],
    stream: Stream,
    *,
    leads: bool = True,
    statuses: bool = True,
) -> None:
    """``produce`` on a producer the caller keeps open: traffic spread over time."""
    for key, record in stream.leads if leads else []:
        producer.send(topics["lead-created"], key.encode(), _CODEC.encode(LEAD, record))
    if statuses:
        for key, record in stream.statuses:
            producer.send(topics["deal-status-changed"], key.encode(), _CODEC.encode(DEAL, record))
    producer.flush()


def push_status_map(sandbox_url: str, status_map: str = STATUS_MAP) -> None:
    """What ``metrica-bridge schema-sync`` does: the map's statuses to the sandbox's counter."""
    statuses = parse_status_map(yaml.safe_load(status_map)).to_order_statuses()
    response = httpx.post(
        f"{sandbox_url}/cdp/api/v1/counter/{COUNTER}/schema/order_statuses",
        json={"order_statuses": statuses},
        headers={"Authorization": f"OAuth {TOKEN}"},
    )
    response.raise_for_status()


def histories(orders: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {o["id"]: [h["order_status"] for h in o["history"]] for o in orders}
