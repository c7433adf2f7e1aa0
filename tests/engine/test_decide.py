"""Per-event decisions without I/O (issue 17): the verdict for each kind of event and state, and
the one update of an order per round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import yaml

from metrica_bridge.engine import decide as verdicts
from metrica_bridge.engine.decide import decide
from metrica_bridge.engine.round_read import RoundState
from metrica_bridge.engine.work import Work
from metrica_bridge.events import DealStatusChanged, Event, LeadCreated, PaymentReceived
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps import order_rules as mapping
from metrica_bridge.store.base import (
    WAITS_CREATION,
    WAITS_IDENTITY,
    Identity,
    OrderState,
    UploadIntent,
)
from tests.support.stack import STATUS_MAP

STATUSES = parse_status_map(yaml.safe_load(STATUS_MAP))
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CREATED = NOW - timedelta(days=2)
KNOWN = Identity("C1", client_ids=("1234567890123456789",))


def _work(
    event: Event, *, released: bool = False, headers: tuple[tuple[str, bytes], ...] = ()
) -> Work:
    source = SourceRecord("topic", 0, 7, b"key", b"value", headers, None)
    return Work(source, "lane", event, released=released)


def _lead(deal: str | None = "D1") -> LeadCreated:
    return LeadCreated.model_validate(
        {
            "event_id": "lead-1",
            "occurred_at": NOW,
            "lead_id": "L1",
            "deal_id": deal,
            "client": {"uniq_id": "C1", "phones": [], "emails": []},
            "metrica_client_id": None,
        }
    )


def _status(code: str = "won") -> DealStatusChanged:
    return DealStatusChanged(
        event_id="status-1",
        occurred_at=NOW,
        deal_id="D1",
        client_uniq_id="C1",
        deal_created_at=CREATED,
        status=code,
        version=1,
    )


def _payment(created: datetime | None = CREATED, currency: str = "RUB") -> PaymentReceived:
    return PaymentReceived(
        event_id="payment-1",
        occurred_at=NOW,
        payment_id="P1",
        deal_id="D1",
        client_uniq_id="C1",
        amount=Decimal("10.00"),
        currency=currency,
        deal_created_at=created,
    )


def _state(**kw: object) -> RoundState:
    values: dict[str, object] = {
        "previous": {},
        "identities": {"C1": KNOWN},
        "parked": set(),
        "claimed": {"D1"},
        "orders": {},
        "inflight": {},
    }
    values.update(kw)
    return RoundState(**values)  # type: ignore[arg-type]


def test_a_status_change_of_a_known_client_updates_its_order() -> None:
    state = _state()
    verdict = decide(_work(_status()), state, STATUSES, NOW)
    assert isinstance(verdict, verdicts.Go)
    assert (verdict.claim, verdict.identity) == ("D1", KNOWN)
    assert isinstance(verdict.order, mapping.Send)
    assert state.taken == {"D1"}


def test_one_update_of_an_order_per_round() -> None:
    """A lead opening the deal and the deal's own event in one round: only the first may
    update the order, the other waits its turn."""
    state = _state()
    assert isinstance(decide(_work(_lead()), state, STATUSES, NOW), verdicts.Go)
    assert isinstance(decide(_work(_status()), state, STATUSES, NOW), verdicts.ClaimBusy)


def test_an_order_claimed_by_another_worker_waits() -> None:
    verdict = decide(_work(_status()), _state(claimed=set()), STATUSES, NOW)
    assert isinstance(verdict, verdicts.ClaimBusy)


def test_a_lead_without_a_deal_only_needs_its_contact() -> None:
    verdict = decide(_work(_lead(None)), _state(claimed=set()), STATUSES, NOW)
    assert verdict == verdicts.Go(KNOWN)


def test_events_of_a_client_without_an_identifier_park() -> None:
    anonymous = _state(identities={"C1": Identity("C1")})
    assert decide(_work(_lead()), anonymous, STATUSES, NOW) == verdicts.Park(
        "C1", "D1", None, WAITS_IDENTITY
    )
    assert decide(_work(_status()), _state(identities={}), STATUSES, NOW) == verdicts.Park(
        "C1", "D1", 1, WAITS_IDENTITY
    )


def test_an_event_parks_behind_its_deals_parked_events_unless_it_is_one_of_them() -> None:
    behind = decide(_work(_status()), _state(parked={"D1"}), STATUSES, NOW)
    assert behind == verdicts.Park("C1", "D1", 1, WAITS_IDENTITY)
    released = decide(_work(_status(), released=True), _state(parked={"D1"}), STATUSES, NOW)
    assert isinstance(released, verdicts.Go)


def test_a_payment_without_the_deals_creation_time_parks_holding_the_claim() -> None:
    verdict = decide(_work(_payment(created=None)), _state(), STATUSES, NOW)
    assert verdict == verdicts.Park("C1", "D1", None, WAITS_CREATION, claim="D1")


def test_a_payment_in_another_currency_is_dead_lettered() -> None:
    order = OrderState("D1", "C1", created_at=CREATED, currency="RUB")
    state = _state(orders={"D1": order})
    verdict = decide(_work(_payment(currency="USD")), state, STATUSES, NOW)
    assert isinstance(verdict, verdicts.DeadLetter)
    assert (verdict.error_class, verdict.claim) == (ErrorClass.INVALID_EVENT, "D1")


def test_repeats_poison_and_expired_events() -> None:
    seen = _state(previous={"status-1": Outcome.DELIVERED})
    assert decide(_work(_status()), seen, STATUSES, NOW) == verdicts.Duplicate(Outcome.DELIVERED)
    # A dead-lettered event comes back only as a replay; a parked one only from the park.
    dead = _state(previous={"status-1": Outcome.DEAD_LETTERED})
    replay = _work(_status(), headers=(("dlq.replay.count", b"1"),))
    assert isinstance(decide(replay, dead, STATUSES, NOW), verdicts.Go)
    parked = _state(previous={"status-1": Outcome.PARKED})
    assert isinstance(decide(_work(_status(), released=True), parked, STATUSES, NOW), verdicts.Go)
    poison = _work(_status())
    poison.event, poison.poison = None, (ErrorClass.DECODE_ERROR, "bad bytes")
    assert decide(poison, _state(), STATUSES, NOW) == verdicts.DeadLetter(
        ErrorClass.DECODE_ERROR, "bad bytes"
    )
    expired = _work(_status(), released=True)
    expired.expired = "waited 60s"
    assert decide(expired, _state(), STATUSES, NOW) == verdicts.DeadLetter(
        ErrorClass.UNATTRIBUTABLE, "waited 60s"
    )


def test_an_order_a_crashed_run_was_uploading_waits_for_that_upload_to_settle() -> None:
    """Found by the long chaos run: a killed process's upload of the order (a deal amount) was
    applied and never recorded; a payment decided from the stored state sent the order without
    it, and the revenue stayed wrong. Only the event that upload carried goes on (to reconcile)."""
    crashed = UploadIntent("i-1", "crashed", "orders", 1, NOW - timedelta(seconds=5))
    state = _state(unsettled={"D1": "i-1"})
    assert decide(_work(_payment()), state, STATUSES, NOW) == verdicts.Unsettled("i-1")
    carried = _state(unsettled={"D1": "i-1"}, inflight={"status-1": crashed})
    assert isinstance(decide(_work(_status()), carried, STATUSES, NOW), verdicts.Go)
