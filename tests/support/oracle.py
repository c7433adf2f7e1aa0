"""What Metrica must hold after a simulated stream, derived from the simulator's own facts.

Only rules that hold however the three topics interleave are derived here:
* an order's final status is the mapped status of its newest (occurred_at, version) event among
  status changes and payments (the newest is never stale); a deal with a lead only stays ``new``;
* an order's history is a subsequence of its events sorted by (occurred_at, version), so it
  never goes backwards, and has no more entries than the deal has distinct events;
* a deal is in Metrica when its client ever gets an identifier (a ClientID, or a phone/email
  with consent); otherwise all its events, its lead included, end in the DLQ as unattributable.
  A client whose leads disagree on consent is ``uncertain``: the latest lead *processed* decides,
  and the three topics interleave freely, so either fate is right for its deals;
* every revenue an order passes through is the deal's amount or the sum of a set of its distinct
  payments that leaves none out which was produced before one in the set, unless the left-out one
  was dead-lettered meanwhile (:meth:`Deal.revenues`); the final one is the amount when any status
  names it, else the sum of every payment;
* a client's contact ends holding every ClientID of its leads, and every phone and email of them
  when the client consented (:class:`Identifiers`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations
from typing import Any

from metrica_bridge import normalize
from metrica_bridge.simulate import Fate, SimulatedMessage

PAID = "won"
INITIAL = "new"


@dataclass
class Deal:
    events: list[tuple[tuple[int, int], str, str]] = field(
        default_factory=list
    )  # key, kind, status
    event_ids: set[str] = field(default_factory=set)
    client: str = ""
    amounts: set[Decimal] = field(default_factory=set)  # revenues named by status events
    # Distinct payments in the order they were produced: (payment_id, amount, event_id).
    payments: list[tuple[str, Decimal, str]] = field(default_factory=list)

    def ordered(self) -> list[str]:
        return [status for _, _, status in sorted(self.events)]

    def final(self) -> str:
        updates = [(key, status) for key, kind, status in self.events if kind != "LeadCreated"]
        return max(updates)[1] if updates else INITIAL

    def final_revenue(self) -> Decimal | None:
        if self.amounts:
            return max(self.amounts)
        if self.payments:
            return sum((amount for _, amount, _ in self.payments), Decimal(0))
        return None

    def revenues(self, dead_lettered: set[str]) -> set[Decimal | None]:
        """Every revenue the order may show at some moment. Payments of a deal share a
        partition, so they are handled in the order produced; one that was dead-lettered
        (an outage, then a replay) lets the ones after it count without it for a while."""
        allowed: set[Decimal | None] = {None, *self.amounts}
        for size in range(1, len(self.payments) + 1):
            for chosen in combinations(range(len(self.payments)), size):
                last = chosen[-1]
                skipped = [i for i in range(last) if i not in chosen]
                if all(self.payments[i][2] in dead_lettered for i in skipped):
                    allowed.add(sum((self.payments[i][1] for i in chosen), Decimal(0)))
        return allowed


@dataclass
class Identifiers:
    """What a client's contact must end holding (raw values; hashing is off in the chaos run)."""

    client_ids: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    consents: set[bool] = field(default_factory=set)

    def expected(self) -> tuple[set[str], set[str], set[str]]:
        if self.consents == {True}:
            return self.client_ids, self.phones, self.emails
        return self.client_ids, set(), set()


@dataclass
class Expectation:
    deals: dict[str, Deal]
    identified: set[str]  # clients with an identifier
    uncertain: set[str]  # clients whose leads disagree on consent
    poison: dict[str, dict[str, int]]  # topic -> error class -> count
    event_ids: set[str]  # distinct non-poison event ids
    contacts: dict[str, Identifiers]  # client -> what its leads told

    def certain(self) -> set[str]:
        return {d for d, deal in self.deals.items() if deal.client not in self.uncertain}

    def in_metrica(self) -> set[str]:
        return {d for d in self.certain() if self.deals[d].client in self.identified}

    def unattributable(self) -> set[str]:
        return self.certain() - self.in_metrica()


def _identified(facts: dict[str, Any]) -> bool:
    cid = facts.get("metrica_client_id")
    if cid and normalize.client_id(str(cid)):
        return True
    if not facts.get("consent", True):
        return False
    return any(normalize.phone(p) for p in facts.get("phones") or []) or any(
        normalize.email(e) for e in facts.get("emails") or []
    )


def expect(messages: list[SimulatedMessage]) -> Expectation:
    deals: dict[str, Deal] = defaultdict(Deal)
    identified: set[str] = set()
    poison: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    event_ids: set[str] = set()
    contacts: dict[str, Identifiers] = defaultdict(Identifiers)
    for m in messages:
        if m.fate in (Fate.DECODE_ERROR, Fate.INVALID_EVENT):
            poison[m.topic][m.fate.value] += 1
            continue
        if m.fate is Fate.DUPLICATE or m.facts is None or m.event_id is None:
            continue
        event_ids.add(m.event_id)
        f = m.facts
        if m.kind == "LeadCreated":
            _learn(contacts[f["client"]], f)
            if _identified(dict(f)):
                identified.add(f["client"])
            if not f.get("deal_id"):
                continue
            deal = deals[f["deal_id"]]
            deal.events.append(((f["occurred_at_ms"], -1), m.kind, INITIAL))
        elif m.kind == "DealStatusChanged":
            deal = deals[f["deal_id"]]
            version = f.get("version")
            deal.events.append(
                ((f["occurred_at_ms"], -1 if version is None else version), m.kind, f["status"])
            )
            if f.get("revenue") is not None:
                deal.amounts.add(Decimal(f["revenue"]))
        else:
            deal = deals[f["deal_id"]]
            deal.events.append(((f["occurred_at_ms"], -1), m.kind, PAID))
            if all(pid != f["payment_id"] for pid, _, _ in deal.payments):
                deal.payments.append((f["payment_id"], Decimal(f["amount"]), m.event_id))
        deal.client = f["client"]
        deal.event_ids.add(m.event_id)
    uncertain = {client for client, told in contacts.items() if len(told.consents) > 1}
    return Expectation(dict(deals), identified, uncertain, poison, event_ids, dict(contacts))


def _learn(into: Identifiers, facts: dict[str, Any]) -> None:
    into.consents.add(bool(facts.get("consent", True)))
    cid = facts.get("metrica_client_id")
    if cid and (value := normalize.client_id(str(cid))):
        into.client_ids.add(value)
    into.phones.update(p for raw in facts.get("phones") or [] if (p := normalize.phone(raw)))
    into.emails.update(e for raw in facts.get("emails") or [] if (e := normalize.email(raw)))


def is_subsequence(history: list[str], ordered: list[str]) -> bool:
    it = iter(ordered)
    return all(any(status == candidate for candidate in it) for status in history)
