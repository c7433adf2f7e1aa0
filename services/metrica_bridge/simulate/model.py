"""A seeded model of a CRM: clients, leads, deals moving through statuses, payments.

:func:`generate` turns a :class:`SimulationConfig` into an iterator of encoded Kafka messages
with, for each, what the service is expected to do with it (its *fate*) and the facts a test
needs to compute the expected Metrica state. It touches no Kafka and no clock (when ``now_ms``
is given): the same configuration yields byte-identical messages.

How the stream is built. Up to ``concurrency`` *stories* are in progress at once; each message
slot picks one at random and emits its next step, so stories interleave the way a busy CRM's
events do. A story is one of:

* ``lead_with_deal`` — a lead that carries ``deal_id`` (the order starts now), then statuses;
* ``lead_then_deal`` — a lead, then the deal's first status ``new``, then more statuses;
* ``lead_only`` — a lead and no deal (yet);
* ``repeat_deal`` — a returning client (one who already had a lead) opens another deal;
* ``identity_late`` — a new client's deal events arrive before the client's lead;
* ``anonymous`` — a deal for a client that never has a lead (no identity, ever).

Deals go ``new → qualified → won|lost|junk`` (or stop early), ``version`` counting the status
events and ``deal_created_at`` fixed per deal; won deals get 1..3 payments whose amounts sum
to the revenue, or not. Occurred-at times advance uniformly over the last ``span_days`` in
emission order, except ``late`` events (an older status emitted after a newer one of the same
deal) and ``old`` deals (created about 30 days ago). Duplicates re-send an earlier message's
exact bytes; poison messages are described in :mod:`metrica_bridge.simulate.poison`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from metrica_bridge.codec import Codec, WireFormat
from metrica_bridge.events import EventKind

LEAD = "crm.events.LeadCreated"
DEAL = "crm.events.DealStatusChanged"
PAYMENT = "crm.events.PaymentReceived"
SCHEMA_KIND: dict[str, EventKind] = {
    LEAD: EventKind.LEAD_CREATED,
    DEAL: EventKind.DEAL_STATUS_CHANGED,
    PAYMENT: EventKind.PAYMENT_RECEIVED,
}
DEFAULT_TOPICS: dict[EventKind, str] = {kind: kind.value for kind in EventKind}

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
OLD_DEAL_AGE_DAYS = 30


class Fate(StrEnum):
    """What the service should make of a message (DESIGN.md §4, §5)."""

    OK = "ok"  # a new event: delivered (or parked until its client's identity is known)
    DUPLICATE = "duplicate"  # the same event_id and bytes again
    LATE = "late"  # older than an already-emitted status of the same deal: stale
    DECODE_ERROR = "decode_error"  # undecodable bytes: dead-lettered
    INVALID_EVENT = "invalid_event"  # decodable but breaks the contract: dead-lettered


class Story(StrEnum):
    LEAD_WITH_DEAL = "lead_with_deal"
    LEAD_THEN_DEAL = "lead_then_deal"
    LEAD_ONLY = "lead_only"
    REPEAT_DEAL = "repeat_deal"
    IDENTITY_LATE = "identity_late"
    ANONYMOUS = "anonymous"


# Share of stories of each kind (a repeat deal needs a returning client; until one exists it
# becomes a lead_then_deal).
STORY_WEIGHTS: dict[Story, int] = {
    Story.LEAD_WITH_DEAL: 45,
    Story.LEAD_THEN_DEAL: 20,
    Story.LEAD_ONLY: 12,
    Story.REPEAT_DEAL: 8,
    Story.IDENTITY_LATE: 10,
    Story.ANONYMOUS: 5,
}


@dataclass(frozen=True)
class SimulationConfig:
    count: int = 10_000  # messages in total, duplicates and poison included
    seed: int = 1
    clients: int = 1_000  # pool of returning clients (identity_late/anonymous get their own)
    duplicates: float = 0.0
    late: float = 0.0
    poison: float = 0.0
    old: float = 0.0  # share of deals created ~30 days ago (outside Metrica's 21-day window)
    wire: WireFormat = WireFormat.SINGLE_OBJECT
    topics: Mapping[EventKind, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    now_ms: int | None = None  # reference time; None = the wall clock when generation starts
    span_days: float = 3.0
    concurrency: int = 256  # stories in progress at once
    id_prefix: str | None = None  # entity ids start with it; default "s<seed>"

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")
        if self.clients < 1:
            raise ValueError("clients must be >= 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.span_days <= 0:
            raise ValueError("span_days must be > 0")
        for name in ("duplicates", "late", "poison", "old"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
        if self.duplicates + self.poison + self.late > 1.0:
            raise ValueError("duplicates + poison + late cannot exceed 1")
        missing = [kind.value for kind in EventKind if kind not in self.topics]
        if missing:
            raise ValueError(f"no topic configured for {missing}")

    @property
    def prefix(self) -> str:
        return self.id_prefix if self.id_prefix is not None else f"s{self.seed}"


class SimulatedMessage(NamedTuple):
    """One message to produce, with what the service should make of it.

    (A named tuple rather than a frozen dataclass: it is built once per event on the hot path.)
    """

    topic: str
    key: bytes | None
    value: bytes
    event_id: str | None  # None when the bytes cannot be decoded
    kind: str | None  # record type ("LeadCreated", ...), None for garbage bytes
    fate: Fate
    story: str | None = None
    poison: str | None = None  # which kind of poison, for poison messages
    facts: Mapping[str, Any] | None = None  # JSON-ready semantic fields (not for poison)

    def manifest(self) -> dict[str, Any]:
        """One JSON-ready line of the manifest."""
        return {
            "topic": self.topic,
            "key": None if self.key is None else self.key.decode("utf-8", "backslashreplace"),
            "event_id": self.event_id,
            "kind": self.kind,
            "fate": self.fate.value,
            "story": self.story,
            "poison": self.poison,
            "facts": self.facts,
        }


def to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def money_text(cents: int | None) -> str | None:
    return None if cents is None else f"{cents // 100}.{cents % 100:02d}"


class SeededRandom(random.Random):
    """``random.Random`` plus cheap draws: ``randrange``/``choice`` cost ~1 µs, these ~0.1 µs,
    which matters at tens of thousands of events per second."""

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        """An int in ``[low, high)``."""
        return low + int(self.random() * (high - low))

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant nibble

# -- identities -----------------------------------------------------------------------------

_FIRST_NAMES = ("Иван", "Мария", "Alexey", "Ольга", "Dmitry", "Анна", "Sergey", "Елена")
_LAST_NAMES = ("Петров", "Smirnova", "Иванов", "Kuznetsova", "Соколов", "Popova")
_MAIL_DOMAINS = ("example.ru", "mail.example.com", "Example.RU", "yandex.example")
_UTM_SOURCES = (("yandex", "cpc"), ("google", "cpc"), ("vk", "social"), ("email", "newsletter"))


@dataclass(slots=True)
class _Client:
    uniq_id: str
    name: str | None
    phone: str | None  # 10 national digits, e.g. "9995551111"
    email: str | None
    client_id: str | None  # Metrica ClientID (19 digits)
    has_lead: bool = False


def _messy_phone(rng: SeededRandom, digits: str) -> str:
    a, b, c, d = digits[:3], digits[3:6], digits[6:8], digits[8:]
    style = rng.below(8)
    if style == 0:
        return f"+7 ({a}) {b}-{c}-{d}"
    if style == 1:
        return f"8 {a} {b} {c} {d}"
    if style == 2:
        return f"+7{digits}"
    if style == 3:
        return f"8({a}){b}{c}{d}"
    if style == 4:
        return digits
    if style == 5:
        return f" 7-{a}-{b}-{c}-{d} "
    if style == 6:
        return f"+7 {a} {b}-{c}{d}"
    return f"8-{a}-{b}{c}{d}"


def _messy_email(rng: SeededRandom, email: str) -> str:
    style = rng.below(5)
    if style == 0:
        return f" {email.title()} "
    if style == 1:
        return email.upper()
    if style == 2:
        return f"{email} "
    return email


# -- stories --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Deal:
    deal_id: str
    client: _Client
    created_ms: int = -1  # fixed by the deal's first event
    last_ms: int = -1
    currency: str | None = "RUB"
    versioned: bool = True
    revenue_cents: int | None = None
    cost_cents: int | None = None
    products: list[dict[str, Any]] = field(default_factory=list)
    old: bool = False
    # Encoded-record values computed once per deal rather than once per event.
    revenue: Decimal | None = None
    cost: Decimal | None = None
    created_at: datetime | None = None

    def created_datetime(self) -> datetime:
        if self.created_at is None:
            self.created_at = to_datetime(self.created_ms)
        return self.created_at


# A step is a tuple; the first element says what it is:
#   ("lead", lead_id, client, deal | None, occurred_ms | None)
#   ("status", deal, status, version | None, revenue_cents | None, late: bool)
#   ("payment", deal, payment_id, amount_cents)
Step = tuple[Any, ...]


@dataclass(slots=True)
class _StoryState:
    kind: Story
    steps: list[Step]
    position: int = 0
    deferred: tuple[Step, int] | None = None  # a late status and the time it really happened


class _Generator:
    def __init__(self, config: SimulationConfig, codec: Codec) -> None:
        self.config = config
        self.codec = codec
        self.rng = SeededRandom(config.seed)
        self.prefix = config.prefix
        self.topics = {schema: config.topics[kind] for schema, kind in SCHEMA_KIND.items()}
        now_ms = config.now_ms if config.now_ms is not None else int(time.time() * 1000)
        self.now_ms = now_ms
        span_ms = int(config.span_days * _DAY_MS)
        self.start_ms = now_ms - span_ms
        self.step_ms = span_ms / max(1, config.count)
        self.pool: list[_Client | None] = [None] * config.clients
        self.returning: list[_Client] = []
        self.counters = {"lead": 0, "deal": 0, "payment": 0, "client": 0}
        # One entry per unit of weight: a uniform pick is a weighted choice, at a tenth the cost.
        self.story_deck = [kind for kind, weight in STORY_WEIGHTS.items() for _ in range(weight)]
        self.clock_ms = self.start_ms
        # Adaptive odds of making a story late, so the late share lands near the target.
        self.late_target = round(config.late * config.count)
        self.late_planned = 0
        self.late_eligible = 0
        self.stories_started = 0

    # -- ids ----------------------------------------------------------------------------------

    def event_id(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def next_id(self, counter: str, letter: str) -> str:
        self.counters[counter] += 1
        return f"{letter}-{self.prefix}-{self.counters[counter]:07d}"

    # -- clients ------------------------------------------------------------------------------

    def new_client(self, *, anonymous: bool = False) -> _Client:
        rng = self.rng
        self.counters["client"] += 1
        uniq_id = f"C-{self.prefix}-{self.counters['client']:07d}"
        name = f"{rng.pick(_FIRST_NAMES)} {rng.pick(_LAST_NAMES)}" if rng.random() < 0.8 else None
        if anonymous or rng.random() < 0.05:
            return _Client(uniq_id, name, None, None, None)
        phone = f"9{rng.randrange(10**9):09d}" if rng.random() < 0.8 else None
        email = (
            f"user{self.counters['client']}.{rng.below(1000)}@{rng.pick(_MAIL_DOMAINS)}".lower()
            if rng.random() < 0.6
            else None
        )
        client_id = (
            f"{rng.randrange(10**9, 10**10)}{rng.randrange(10**9):09d}"
            if rng.random() < 0.85
            else None
        )
        if phone is None and email is None and client_id is None:
            client_id = f"{rng.randrange(10**9, 10**10)}{rng.randrange(10**9):09d}"
        return _Client(uniq_id, name, phone, email, client_id)

    def pool_client(self) -> _Client:
        index = self.rng.below(len(self.pool))
        client = self.pool[index]
        if client is None:
            client = self.pool[index] = self.new_client()
        return client

    # -- planning -----------------------------------------------------------------------------

    def new_deal(self, client: _Client) -> _Deal:
        rng = self.rng
        deal = _Deal(self.next_id("deal", "D"), client)
        deal.currency = "RUB" if rng.random() < 0.9 else None
        deal.versioned = rng.random() < 0.9
        deal.revenue_cents = rng.between(1_000, 50_000) * 100 + rng.pick((0, 0, 50, 99))
        deal.cost_cents = deal.revenue_cents * 3 // 10 if rng.random() < 0.2 else None
        deal.revenue = money(deal.revenue_cents)
        deal.cost = None if deal.cost_cents is None else money(deal.cost_cents)
        deal.products = [
            {"sku": f"SKU-{rng.between(1, 500):04d}", "quantity": rng.between(1, 5)}
            for _ in range(rng.pick((0, 1, 1, 2, 3)))
        ]
        if rng.random() < self.config.old:
            deal.old = True
            deal.created_ms = (
                self.now_ms - OLD_DEAL_AGE_DAYS * _DAY_MS - rng.below(12 * 60) * _MINUTE_MS
            )
        return deal

    def status_plan(self, deal: _Deal, *, created_by_lead: bool) -> list[Step]:
        rng = self.rng
        r = rng.random()
        if r < 0.40:
            path = ["qualified", "won"]
        elif r < 0.55:
            path = ["qualified", "lost"]
        elif r < 0.65:
            path = ["lost"]
        elif r < 0.75:
            path = ["junk"]
        elif r < 0.90:
            path = ["qualified"]
        else:
            path = []
        if not created_by_lead or rng.random() < 0.5:
            path.insert(0, "new")
        steps: list[Step] = []
        for version, status in enumerate(path, start=1):
            revenue = None
            if status == "qualified" or (status == "won" and rng.random() < 0.8):
                revenue = deal.revenue_cents
            steps.append(
                ("status", deal, status, version if deal.versioned else None, revenue, False)
            )
        if path and path[-1] == "won":
            steps.extend(self.payment_plan(deal, won_revenue=steps[-1][4]))
        return steps

    def payment_plan(self, deal: _Deal, won_revenue: int | None) -> list[Step]:
        rng = self.rng
        count = rng.pick((1, 1, 1, 2, 3))
        total = deal.revenue_cents or 100_000
        if won_revenue is None or rng.random() < 0.3:
            # Partial payments, an overpayment, or a revenue the CRM never stated.
            total = total * rng.pick((5, 8, 10, 12)) // 10
        cuts = sorted(rng.sample(range(1, total), count - 1)) if count > 1 else []
        amounts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
        return [("payment", deal, self.next_id("payment", "P"), amount) for amount in amounts]

    def maybe_late(self, steps: list[Step]) -> None:
        """Mark one status (not the last) to be emitted after the next one."""
        candidates = [
            i
            for i in range(len(steps) - 1)
            if steps[i][0] == "status" and steps[i + 1][0] == "status"
        ]
        if not candidates:
            return
        self.late_eligible += 1
        remaining = self.late_target - self.late_planned
        if remaining <= 0:
            return
        # Eligible stories seen so far predict how many are still to come.
        eligible_rate = self.late_eligible / self.stories_started
        stories_left = max(1.0, (self.config.count - self.emitted) / 3.2 * eligible_rate)
        if self.rng.random() < remaining / stories_left:
            i = self.rng.pick(candidates)
            steps[i] = (*steps[i][:5], True)
            self.late_planned += 1

    def new_story(self) -> _StoryState:
        rng = self.rng
        self.stories_started += 1
        kind = rng.pick(self.story_deck)
        if kind is Story.REPEAT_DEAL and not self.returning:
            kind = Story.LEAD_THEN_DEAL
        steps: list[Step]
        if kind is Story.LEAD_WITH_DEAL:
            client = self.pool_client()
            deal = self.new_deal(client)
            steps = [("lead", self.next_id("lead", "L"), client, deal, None)]
            steps += self.status_plan(deal, created_by_lead=True)
        elif kind is Story.LEAD_THEN_DEAL:
            client = self.pool_client()
            deal = self.new_deal(client)
            lead_ms = deal.created_ms - 30 * _MINUTE_MS if deal.old else None
            steps = [("lead", self.next_id("lead", "L"), client, None, lead_ms)]
            steps += self.status_plan(deal, created_by_lead=False)
        elif kind is Story.LEAD_ONLY:
            steps = [("lead", self.next_id("lead", "L"), self.pool_client(), None, None)]
        elif kind is Story.REPEAT_DEAL:
            client = rng.pick(self.returning)
            steps = self.status_plan(self.new_deal(client), created_by_lead=False)
        elif kind is Story.IDENTITY_LATE:
            client = self.new_client()
            deal = self.new_deal(client)
            statuses = self.status_plan(deal, created_by_lead=False)
            # The lead happened before the deal but is published after its first status(es).
            cut = rng.between(1, min(3, len(statuses)) + 1)
            lead = ("lead", self.next_id("lead", "L"), client, None, -1)
            steps = [*statuses[:cut], lead, *statuses[cut:]]
        else:
            steps = self.status_plan(
                self.new_deal(self.new_client(anonymous=True)), created_by_lead=False
            )
        self.maybe_late(steps)
        return _StoryState(kind, steps)

    # -- emission -----------------------------------------------------------------------------

    emitted = 0

    def tick(self) -> int:
        self.clock_ms = self.start_ms + int(self.emitted * self.step_ms)
        return self.clock_ms

    def emit_step(self, story: _StoryState) -> SimulatedMessage:
        if story.deferred is not None:
            (step, happened_ms), story.deferred = story.deferred, None
            return self.status_message(story, step, happened_ms, Fate.LATE)
        step = story.steps[story.position]
        story.position += 1
        if step[0] == "status" and step[5]:
            # Happened now, but the CRM publishes the next status first.
            deal: _Deal = step[1]
            happened_ms = self.deal_time(deal)
            story.deferred = (step, happened_ms)
            step = story.steps[story.position]
            story.position += 1
            self.clock_ms = happened_ms + 1
        if step[0] == "lead":
            return self.lead_message(story, step)
        if step[0] == "status":
            deal = step[1]
            return self.status_message(story, step, self.deal_time(deal), Fate.OK)
        return self.payment_message(story, step)

    def deal_time(self, deal: _Deal) -> int:
        """Now, for this deal: its first event happens at its creation, later ones after it."""
        if deal.created_ms < 0:
            deal.created_ms = self.clock_ms
        # The first event happens at creation (an old deal's, 30 days ago); later ones now.
        occurred = deal.created_ms if deal.last_ms < 0 else max(self.clock_ms, deal.last_ms + 1)
        deal.last_ms = occurred
        return occurred

    def lead_message(self, story: _StoryState, step: Step) -> SimulatedMessage:
        rng = self.rng
        _, lead_id, client, deal, fixed_ms = step
        old = False
        if fixed_ms == -1:
            # identity_late: the lead predates the deal it is published after.
            first_deal: _Deal = story.steps[0][1]
            occurred_ms = first_deal.created_ms - rng.between(10, 120) * _MINUTE_MS
            old = first_deal.old
        elif fixed_ms is not None:
            occurred_ms, old = fixed_ms, True  # the lead of an old lead_then_deal story
        elif deal is not None:
            occurred_ms, old = self.deal_time(deal), deal.old  # the lead creates the order
        else:
            occurred_ms = self.clock_ms
        if not client.has_lead:
            client.has_lead = True
            self.returning.append(client)
        phones = [_messy_phone(rng, client.phone)] if client.phone and rng.random() < 0.95 else []
        if client.phone and rng.random() < 0.03:
            phones.append("12-34")  # a typo the normaliser must drop
        emails = [_messy_email(rng, client.email)] if client.email and rng.random() < 0.9 else []
        client_id = client.client_id if client.client_id and rng.random() < 0.9 else None
        consent = rng.random() >= 0.05
        utm = None
        if rng.random() < 0.6:
            source, medium = rng.pick(_UTM_SOURCES)
            utm = {
                "source": source,
                "medium": medium,
                "campaign": f"campaign-{rng.below(20)}",
                "content": None,
                "term": None,
            }
        yclid = (
            str(10**17 + rng.getrandbits(64) % (9 * 10**17))
            if utm and utm["source"] == "yandex"
            else None
        )
        event_id = self.event_id()
        deal_id = deal.deal_id if deal is not None else None
        record = {
            "event_id": event_id,
            "occurred_at": to_datetime(occurred_ms),
            "lead_id": lead_id,
            "deal_id": deal_id,
            "client": {
                "uniq_id": client.uniq_id,
                "name": client.name,
                "phones": phones,
                "emails": emails,
            },
            "metrica_client_id": client_id,
            "yclid": yclid,
            "utm": utm,
            "consent": consent,
        }
        facts = {
            "lead_id": lead_id,
            "deal_id": deal_id,
            "client": client.uniq_id,
            "occurred_at_ms": occurred_ms,
            "deal_created_at_ms": occurred_ms if deal is not None else None,
            "old": old,
            "metrica_client_id": client_id,
            "phones": phones,
            "emails": emails,
            "yclid": yclid,
            "consent": consent,
        }
        return self.message(LEAD, record, lead_id, Fate.OK, story, facts)

    def status_message(
        self, story: _StoryState, step: Step, occurred_ms: int, fate: Fate
    ) -> SimulatedMessage:
        _, deal, status, version, revenue, _late = step
        record = {
            "event_id": self.event_id(),
            "occurred_at": to_datetime(occurred_ms),
            "deal_id": deal.deal_id,
            "client_uniq_id": deal.client.uniq_id,
            "deal_created_at": deal.created_datetime(),
            "status": status,
            "revenue": None if revenue is None else deal.revenue,
            "cost": deal.cost,
            "currency": deal.currency,
            "products": deal.products,
            "version": version,
        }
        facts = {
            "deal_id": deal.deal_id,
            "client": deal.client.uniq_id,
            "status": status,
            "occurred_at_ms": occurred_ms,
            "deal_created_at_ms": deal.created_ms,
            "old": deal.old,
            "version": version,
            "revenue": money_text(revenue),
            "currency": deal.currency or "RUB",
        }
        return self.message(DEAL, record, deal.deal_id, fate, story, facts)

    def payment_message(self, story: _StoryState, step: Step) -> SimulatedMessage:
        _, deal, payment_id, amount = step
        occurred_ms = self.deal_time(deal)
        with_created = self.rng.random() < 0.5
        record = {
            "event_id": self.event_id(),
            "occurred_at": to_datetime(occurred_ms),
            "payment_id": payment_id,
            "deal_id": deal.deal_id,
            "client_uniq_id": deal.client.uniq_id,
            "amount": money(amount),
            "currency": deal.currency or "RUB",
            "deal_created_at": deal.created_datetime() if with_created else None,
        }
        facts = {
            "deal_id": deal.deal_id,
            "client": deal.client.uniq_id,
            "payment_id": payment_id,
            "amount": money_text(amount),
            "occurred_at_ms": occurred_ms,
            "deal_created_at_ms": deal.created_ms,
            "old": deal.old,
            "currency": deal.currency or "RUB",
        }
        return self.message(PAYMENT, record, deal.deal_id, Fate.OK, story, facts)

    def message(
        self,
        schema: str,
        record: dict[str, Any],
        key: str,
        fate: Fate,
        story: _StoryState,
        facts: dict[str, Any],
    ) -> SimulatedMessage:
        return SimulatedMessage(
            topic=self.topics[schema],
            key=key.encode(),
            value=self.codec.encode(schema, record, self.config.wire),
            event_id=record["event_id"],
            kind=schema.rsplit(".", 1)[1],
            fate=fate,
            story=story.kind.value,
            facts=facts,
        )

    # -- the stream ---------------------------------------------------------------------------

    def run(self) -> Iterator[SimulatedMessage]:
        from metrica_bridge.simulate.poison import PoisonMaker

        config, rng = self.config, self.rng
        count = config.count
        # Exact numbers of duplicates and poison, at seeded positions.
        plan = bytearray(count)
        n_dup = round(config.duplicates * count)
        n_poison = round(config.poison * count)
        special = rng.sample(range(count), n_dup + n_poison)
        for i in special[:n_dup]:
            plan[i] = 1
        for i in special[n_dup:]:
            plan[i] = 2
        poison = PoisonMaker(self)
        recent: list[SimulatedMessage] = []
        active: list[_StoryState] = []
        for slot in range(count):
            self.emitted = slot
            self.tick()
            kind = plan[slot]
            if kind == 2:
                yield poison.make()
                continue
            if kind == 1 and recent:
                original = recent[rng.below(len(recent))]
                yield SimulatedMessage(
                    topic=original.topic,
                    key=original.key,
                    value=original.value,
                    event_id=original.event_id,
                    kind=original.kind,
                    fate=Fate.DUPLICATE,
                    story=original.story,
                    facts=original.facts,
                )
                continue
            if len(active) < config.concurrency:
                active.append(self.new_story())
            index = rng.below(len(active))
            story = active[index]
            message = self.emit_step(story)
            if story.deferred is None and story.position >= len(story.steps):
                active[index] = active[-1]
                active.pop()
            if len(recent) < 512:
                recent.append(message)
            else:
                recent[rng.below(512)] = message
            yield message


def generate(config: SimulationConfig, codec: Codec) -> Iterator[SimulatedMessage]:
    """The simulated stream: deterministic for a seed (and ``now_ms``); touches no Kafka.

    The codec encodes the records (single-object encoding needs nothing else; the Confluent
    format needs the codec's schema registry).
    """
    return _Generator(config, codec).run()
