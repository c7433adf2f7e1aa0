"""The exact accounting of a chaos run, by event id, and its report (rich tables and markdown).

What each produced event may end as comes from the simulator's facts through the oracle
(:mod:`tests.support.oracle`); what it did end as comes from the store's ledger, the DLQ topics
and the sandbox. Delivery is checked exactly: each order's history in Metrica must hold one
entry per upload the ledger credits to one of the deal's events, no more (a duplicate, or a
delivery nobody recorded) and no less (an outcome that claims a delivery Metrica never saw).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from metrica_bridge.codec import DecodeError
from metrica_bridge.simulate import Fate, SimulatedMessage
from tests.support.chaos import CODEC, Outcome
from tests.support.oracle import Expectation, expect, is_subsequence

DELIVERY = frozenset({"delivered", "skipped", "stale"})
UNATTRIBUTABLE = "dead_lettered:unattributable"
EXAMPLES = 25
CENT = Decimal("0.01")
# Between the sweeper reading a client's identity and the dead letter's dlq.failed.at.
SWEEP_SLACK = timedelta(seconds=5)


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    known: str = ""  # a reported, not yet fixed service bug: shown, but does not fail the run

    @property
    def result(self) -> str:
        if not self.violations:
            return "ok"
        return f"KNOWN: {self.known}" if self.known else "FAIL"

    def fail(self, text: str) -> None:
        self.violations.append(text)


@dataclass
class Report:
    sections: list[Section]
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.violations and not c.known]

    def summary(self) -> str:
        lines = []
        for check in self.failures:
            lines.append(f"{check.name}: {len(check.violations)} violation(s)")
            lines.extend(f"  - {v}" for v in check.violations[:10])
        return "\n".join(lines) or "all checks passed"

    def tables(self) -> list[Table]:
        out = []
        for section in [*self.sections, self._checks_section(), self._violations_section()]:
            table = Table(title=section.title, title_justify="left")
            for column in section.columns:
                table.add_column(column)
            for row in section.rows:
                table.add_row(*row)
            out.append(table)
        return out

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        for table in self.tables():
            console.print(table)

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", ""]
        for section in [*self.sections, self._checks_section(), self._violations_section()]:
            lines += [f"## {section.title}", ""]
            lines.append("| " + " | ".join(section.columns) + " |")
            lines.append("|" + "---|" * len(section.columns))
            for row in section.rows:
                lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
            lines.append("")
        return "\n".join(lines)

    def _checks_section(self) -> Section:
        return Section(
            "Checks",
            ["check", "checked", "violations", "result"],
            [[c.name, str(c.checked), str(len(c.violations)), c.result] for c in self.checks],
        )

    def _violations_section(self) -> Section:
        rows = [[c.name, v] for c in self.checks for v in c.violations[:EXAMPLES]] or [
            ["-", "none"]
        ]
        return Section("Violations (first examples)", ["check", "what"], rows)


@dataclass(frozen=True)
class EventInfo:
    event_id: str
    kind: str
    topic: str
    fate: Fate
    deal_id: str | None
    allowed: frozenset[str]  # outcome labels: "delivered", "stale", UNATTRIBUTABLE, ...


def _label(outcome: str, detail: str) -> str:
    return f"{outcome}:{detail}" if outcome == "dead_lettered" else outcome


def _events(messages: list[SimulatedMessage], expected: Expectation) -> dict[str, EventInfo]:
    in_metrica, unattributable = expected.in_metrica(), expected.unattributable()
    events: dict[str, EventInfo] = {}
    for m in messages:
        if m.facts is None or m.event_id is None or m.fate is Fate.DUPLICATE:
            continue
        deal = m.facts.get("deal_id")
        if deal is None:
            allowed = frozenset({"delivered", "skipped"})  # a lead without a deal: a contact
        elif deal in in_metrica:
            allowed = DELIVERY
        elif deal in unattributable:
            allowed = frozenset({UNATTRIBUTABLE})
        else:  # the client's leads disagree on consent: either fate is right
            allowed = DELIVERY | {UNATTRIBUTABLE}
        events[m.event_id] = EventInfo(m.event_id, m.kind or "", m.topic, m.fate, deal, allowed)
    return events


def account(run: Outcome) -> Report:
    expected = expect(run.messages)
    events = _events(run.messages, expected)
    story = _Stories(run)
    checks = {
        name: Check(name)
        for name in (
            "every event has one outcome",
            "outcome expected for the event",
            "nothing left parked",
            "nothing left retry_exhausted",
            "the ledger holds each event's last outcome",
            "poison dead-lettered with its class",
            "dead letters expected for the event",
            "unattributable only while no identifier is known",
            "no event dead-lettered twice",
            "no poison dead-lettered twice",
            "delivered exactly once (by upload id)",
            "no order history longer than its events",
            "no order status regression",
            "final order status",
            "every order state one its events lead to",
            "final order revenue",
            "every contact holds its client's identifiers",
            "only expected orders in Metrica",
            "replays finished",
            "crashed runs' uploads reconciled",
            "no instance crashed",
            "clean exit on SIGTERM",
            "token never in logs",
        )
    }

    # -- dead letters, matched to event ids (or, for poison, to the produced bytes) ------------
    poison_expected: Counter[tuple[str, bytes, str]] = Counter(
        (m.topic, m.value, m.fate.value) for m in run.messages if m.facts is None
    )
    poison_found: Counter[tuple[str, bytes, str]] = Counter()
    per_event: dict[str, Counter[str]] = defaultdict(Counter)
    last_class: dict[str, tuple[int, str]] = {}  # event id -> its latest dead letter's class
    expired_at: dict[str, datetime] = {}  # event id -> when it was dead-lettered unattributable
    dlq_table: Counter[tuple[str, str]] = Counter()
    for record in run.dead_letters:
        headers = {k: v.decode() for k, v in record.headers}
        error_class = headers.get("dlq.error.class", "?")
        original = headers.get("dlq.original.topic", "?")
        dlq_table[(original, error_class)] += 1
        event_id = _event_id(record.value)
        if event_id is not None and event_id in events:
            per_event[event_id][error_class] += 1
            replays = int(headers.get("dlq.replay.count") or 0)
            if replays >= last_class.get(event_id, (-1, ""))[0]:
                last_class[event_id] = (replays, error_class)
            if error_class == "unattributable" and "dlq.failed.at" in headers:
                expired_at[event_id] = datetime.fromisoformat(headers["dlq.failed.at"])
        else:
            poison_found[(original, record.value or b"", error_class)] += 1

    # -- outcomes by event id ------------------------------------------------------------------
    c = checks["every event has one outcome"]
    c.checked = len(events)
    late_identity: set[str] = set()  # deals whose events expired before their client's lead
    by_fate: dict[str, Counter[str]] = defaultdict(Counter)
    for event_id, info in events.items():
        entry = run.ledger.get(event_id)
        if entry is None:
            c.fail(f"{event_id} ({info.kind} on {info.deal_id}): no outcome recorded")
            by_fate["(none)"][info.fate.value] += 1
            continue
        outcome, detail = entry.outcome, entry.detail
        label = _label(outcome, detail)
        shown = label if outcome in ("dead_lettered", "parked") else f"{outcome} ({detail})"
        checks["outcome expected for the event"].checked += 1
        latest = last_class.get(event_id, (0, ""))[1]
        if label == "dead_lettered:retry_exhausted" and latest not in ("", "retry_exhausted"):
            # Replayed, then dead-lettered again for another reason: the ledger kept the first
            # class (a dead_lettered outcome never replaces another one).
            checks["the ledger holds each event's last outcome"].fail(
                f"{event_id}: ledger says retry_exhausted, its replay was dead-lettered "
                f"{latest}; {story(info.deal_id)}"
            )
            label = _label("dead_lettered", latest)
        if label == "dead_lettered:retry_exhausted":
            checks["nothing left retry_exhausted"].fail(f"{event_id}: still retry_exhausted")
        elif label == UNATTRIBUTABLE and label not in info.allowed:
            # The park's wait ran out before the client's lead was handled: what the
            # configuration asks for when the lead topic lags, so reported, not a violation,
            # unless the store knew an identifier for the client before the event expired.
            known = run.identified_at.get(story.clients.get(info.deal_id or "", ""))
            expired = expired_at.get(event_id)
            if known is not None and expired is not None and known > expired - SWEEP_SLACK:
                late_identity.add(info.deal_id or "")
                shown = f"{UNATTRIBUTABLE} (identity arrived later)"
            else:
                checks["unattributable only while no identifier is known"].fail(
                    f"{event_id} ({info.kind}): expired at {expired}, identity known since "
                    f"{known}; {story(info.deal_id)}"
                )
        elif label not in info.allowed:
            checks["outcome expected for the event"].fail(
                f"{event_id} ({info.kind}, {info.fate.value}): {label}, expected one of "
                f"{sorted(info.allowed)}; {story(info.deal_id)}"
            )
        by_fate[shown][info.fate.value] += 1
    checks["nothing left retry_exhausted"].checked = len(events)
    checks["the ledger holds each event's last outcome"].checked = len(last_class)
    checks["unattributable only while no identifier is known"].checked = len(expired_at)
    # Records with no readable event id are ledgered by position (``@topic:partition:offset``):
    # they are the poison, accounted for by their dead letters below.
    unknown = {e for e in run.ledger if not e.startswith("@")} - set(events)
    for event_id in sorted(unknown)[:EXAMPLES]:
        c.fail(f"{event_id}: in the ledger but never produced")
    checks["nothing left parked"].checked = len(events)
    for event_id in run.parked:
        checks["nothing left parked"].fail(f"{event_id}: still parked")

    # -- dead letters: what each event and each poison message should have -------------------
    c = checks["poison dead-lettered with its class"]
    c.checked = sum(poison_expected.values())
    poison_twice = checks["no poison dead-lettered twice"]
    poison_twice.checked = c.checked
    for key, count in poison_expected.items():
        found = poison_found.get(key, 0)
        if found < count:
            others = [k[2] for k in poison_found if k[:2] == key[:2] and k[2] != key[2]]
            c.fail(
                f"a {key[2]} poison on {key[0]} dead-lettered {found}× (expected {count})"
                + (f", found as {others}" if others else "")
            )
        elif found > count:
            poison_twice.fail(
                f"a {key[2]} poison on {key[0]} dead-lettered {found}× (produced {count}×)"
            )
    for key in poison_found.keys() - poison_expected.keys():
        if not any(k[:2] == key[:2] for k in poison_expected):
            checks["dead letters expected for the event"].fail(
                f"a dead letter on {key[0]} ({key[2]}) matches no produced message"
            )
    c = checks["dead letters expected for the event"]
    twice = checks["no event dead-lettered twice"]
    for event_id, info in events.items():
        c.checked += 1
        classes = per_event.get(event_id, Counter())
        recorded = run.ledger.get(event_id)
        ended = _label(recorded.outcome, recorded.detail) if recorded is not None else None
        for error_class, count in classes.items():
            if error_class == "retry_exhausted":
                continue  # an outage's casualty, replayed afterwards (checked above)
            if error_class == "unattributable" and ended == UNATTRIBUTABLE:
                twice.checked += 1
                if count > 1:
                    twice.fail(f"{event_id}: dead-lettered unattributable {count}×")
                continue
            c.fail(f"{event_id} ({info.kind}, deal {info.deal_id}): a {error_class} dead letter "
                   f"while its outcome is {ended}")  # fmt: skip
        if ended == UNATTRIBUTABLE and classes.get("unattributable", 0) == 0:
            c.fail(f"{event_id}: recorded unattributable but no such dead letter")

    # -- Metrica: exactly once, no regression, final state --------------------------------------
    credited: dict[str, Counter[str]] = defaultdict(Counter)  # deal -> upload ids of its events
    ledger_uploads: set[str] = set()
    for event_id, entry in run.ledger.items():
        if entry.upload_id:
            ledger_uploads.add(str(entry.upload_id))
        credit = events.get(event_id)
        delivered = (entry.outcome, entry.detail) == ("delivered", "order")
        if credit is not None and credit.deal_id and delivered:
            credited[credit.deal_id][str(entry.upload_id)] += 1
    orders = {str(o["id"]): o for o in run.orders}
    once = checks["delivered exactly once (by upload id)"]
    longer = checks["no order history longer than its events"]
    regress = checks["no order status regression"]
    final = checks["final order status"]
    only = checks["only expected orders in Metrica"]
    states = checks["every order state one its events lead to"]
    final_revenue = checks["final order revenue"]
    dead_lettered = set(per_event)
    history_entries = 0
    # Applied, then answered with an error (the answer lost on the way): the sender sent the
    # same records again, or the reconciler credited it after a crash. Not a delivery nobody
    # recorded; still a state Metrica showed, so its entries are checked like the rest.
    unanswered = {
        str(u["uploading_id"])
        for u in run.uploads
        if u["status"] == "accepted" and u.get("http_status") not in (None, 200)
    }
    for deal_id, order in orders.items():
        history = order["history"]
        history_entries += len(history)
        deal = expected.deals.get(deal_id)
        only.checked += 1
        if deal is None or (deal_id in expected.unattributable()):
            only.fail(f"order {deal_id} is in Metrica but its client was never identified")
            continue
        seen = Counter(str(h["uploading_id"]) for h in history)
        once.checked += 1
        extra, missing = seen - credited[deal_id], credited[deal_id] - seen
        for upload in unanswered & extra.keys():
            del extra[upload]
        if extra:
            once.fail(
                f"order {deal_id}: {sum(extra.values())} upload(s) {sorted(extra)} in Metrica "
                f"credited to no event; history {_history(history)}; {story(deal_id)}"
            )
        if missing:
            once.fail(f"order {deal_id}: events credited to upload(s) {sorted(missing)} that "
                      f"Metrica's history lacks; {story(deal_id)}")  # fmt: skip
        statuses = [h["order_status"] for h in history]
        # A stale event with news (a payment, a deal amount) re-sends the order with the status
        # Metrica holds (steps/order_rules.py ``_restate``): a repeat, never a step back.
        walk = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
        longer.checked += 1
        answered = [h for h in history if str(h["uploading_id"]) not in unanswered
                    or str(h["uploading_id"]) in credited[deal_id]]  # fmt: skip
        if len(answered) > len(deal.events):
            longer.fail(f"order {deal_id}: {len(answered)} history entries for "
                        f"{len(deal.events)} events")  # fmt: skip
        regress.checked += 1
        if not is_subsequence(walk, deal.ordered()):
            regress.fail(f"order {deal_id}: history {statuses}; {story(deal_id)}")
        states.checked += len(history)
        revenues = deal.revenues(dead_lettered)
        for h in history:
            revenue = _money(h.get("revenue"))
            if revenue not in revenues or h.get("client_uniq_id") != deal.client:
                states.fail(
                    f"order {deal_id}: {h['order_status']} with revenue {revenue} for client "
                    f"{h.get('client_uniq_id')} @{h['uploading_id']}, no sequence of its "
                    f"events leads there (revenues {sorted(map(str, revenues))}); "
                    f"{story(deal_id)}"
                )
    for deal_id in sorted(expected.in_metrica() - late_identity):
        final.checked += 1
        current = orders.get(deal_id)
        if current is None:
            final.fail(f"order {deal_id} is missing from Metrica; {story(deal_id)}")
            continue
        final_revenue.checked += 1
        wanted = expected.deals[deal_id].final_revenue()
        if _money(current.get("revenue")) != wanted:
            final_revenue.fail(
                f"order {deal_id}: revenue {current.get('revenue')}, expected {wanted}; "
                f"{story(deal_id)}"
            )
        elif current["order_status"] != expected.deals[deal_id].final():
            final.fail(
                f"order {deal_id}: {current['order_status']}, expected "
                f"{expected.deals[deal_id].final()}; {story(deal_id)}"
            )
    _check_contacts(run, expected, checks["every contact holds its client's identifiers"])
    accepted = {str(u["uploading_id"]) for u in run.uploads if u["status"] == "accepted"}
    once.checked += len(ledger_uploads)
    for upload in sorted(ledger_uploads - accepted)[:EXAMPLES]:
        once.fail(f"the ledger credits upload {upload}, which Metrica never accepted")

    # -- the run itself ----------------------------------------------------------------------------
    c = checks["replays finished"]
    c.checked = len(run.topics)
    c.violations.extend(run.replay_errors)
    if not run.settled:
        c.fail("the run did not settle before its timeout")
    c = checks["crashed runs' uploads reconciled"]
    c.checked = len(run.reconciled)
    if run.profile.apply_then_fail_rate and run.kills and not run.reconciled:
        # The phase exists to exercise the reconciler: a run where it never ran proved nothing.
        c.fail("uploads were answered 503 after they applied and instances were killed, "
               "but no instance reconciled an in-flight upload")  # fmt: skip
    c = checks["no instance crashed"]
    c.checked = run.instances_started
    c.violations.extend(run.crashes)
    c = checks["clean exit on SIGTERM"]
    for name, code in sorted(run.exit_codes.items()):
        if code == -9:
            continue
        c.checked += 1
        if code != 0:
            c.fail(f"{name} exited with {code} after SIGTERM")
    c = checks["token never in logs"]
    c.checked = run.instances_started
    c.violations.extend(f"the OAuth token is in {name}" for name in run.token_leaks)

    sections = _sections(run, expected, events, by_fate, dlq_table, orders, history_entries)
    return Report(sections, list(checks.values()))


def _money(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(CENT)


def _check_contacts(run: Outcome, expected: Expectation, check: Check) -> None:
    """Every identified client's contact holds every identifier its leads told, no more: a
    merge lost between two processes would take the client's attribution with it."""
    held = {str(c["uniq_id"]): c for c in run.contacts}
    for client in sorted(expected.identified - expected.uncertain):
        check.checked += 1
        contact = held.get(client)
        if contact is None:
            check.fail(f"client {client}: no contact in Metrica")
            continue
        for name, want in zip(
            ("client_ids", "phones", "emails"), expected.contacts[client].expected(), strict=True
        ):
            got = {str(v) for v in contact.get(name) or []}
            if got != want:
                check.fail(f"client {client}: {name} {sorted(got)}, its leads told {sorted(want)}")


def _history(history: list[dict[str, object]]) -> str:
    return ", ".join(f"{h['order_status']}@{h['uploading_id']}" for h in history)


class _Stories:
    """A deal's events in (occurred_at, version) order with what became of each, for messages."""

    def __init__(self, run: Outcome) -> None:
        self.run = run
        self.deals: dict[str, list[tuple[tuple[int, int], str, str]]] = defaultdict(list)
        clients: dict[str, str] = {}
        for index, m in enumerate(run.messages):
            if m.facts is None or m.event_id is None or m.fate is Fate.DUPLICATE:
                continue
            deal = m.facts.get("deal_id")
            if deal is None:
                continue
            clients[deal] = str(m.facts.get("client"))
            version = m.facts.get("version")
            key = (int(m.facts["occurred_at_ms"]), -1 if version is None else int(version))
            if m.kind == "LeadCreated":
                what = "lead"
            elif m.kind == "PaymentReceived":
                what = "payment"
            else:
                what = f"{m.facts.get('status')} v{version}"
            self.deals[deal].append(
                (key, f"#{index} {m.event_id[:8]} {what} {m.fate.value}", m.event_id)
            )
        self.clients = clients

    def __call__(self, deal_id: str | None) -> str:
        if deal_id is None:
            return "no deal"
        parts = []
        for _, text, event_id in sorted(self.deals.get(deal_id, [])):
            entry = self.run.ledger.get(event_id)
            done = "none" if entry is None else f"{_label(entry.outcome, entry.detail)}"
            if entry is not None and entry.upload_id:
                done += f"@{entry.upload_id}"
            if entry is not None:
                done += f" {entry.recorded_at:%H:%M:%S}"
            parts.append(f"{text} → {done}")
        return f"deal {deal_id} (client {self.clients.get(deal_id)}): " + "; ".join(parts)


def _event_id(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        decoded = CODEC.decode(value)
    except DecodeError:
        return None
    event_id = decoded.record.get("event_id")
    return str(event_id) if event_id else None


def _sections(
    run: Outcome,
    expected: Expectation,
    events: dict[str, EventInfo],
    by_fate: dict[str, Counter[str]],
    dlq_table: Counter[tuple[str, str]],
    orders: dict[str, dict[str, object]],
    history_entries: int,
) -> list[Section]:
    p = run.profile
    fates = Counter(m.fate.value for m in run.messages)
    scenario = Section(
        f"Scenario ({p.name})",
        ["what", "value"],
        [
            ["date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
            ["store", "PostgreSQL (pgserver), one database for every instance"],
            ["messages produced", f"{len(run.messages):,} over {p.produce_s:.0f}s, seed {p.seed}"],
            ["  by fate", ", ".join(f"{k} {v:,}" for k, v in sorted(fates.items()))],
            ["distinct event ids", f"{len(events):,}"],
            ["partitions per topic", str(p.partitions)],
            [
                "instances per topic",
                f"up to {p.instances}; {run.instances_started} started, {run.kills} SIGKILLed",
            ],
            [
                "faults",
                f"{p.error_rate:.0%} 503s for {p.fault_s:.0f}s, "
                f"{p.actions.get('burst', 0)} 429 bursts of {p.quota_burst}, "
                + (f"one {p.outage_s:.0f}s outage" if p.outage_s else "no outage")
                + (
                    f", {p.apply_then_fail_rate:.0%} of uploads applied then answered 503"
                    if p.apply_then_fail_rate
                    else ""
                ),
            ],
            ["retry budget", f"{p.retry_budget_s:.0f}s / {p.retry_max_attempts} attempts"],
            ["park max wait", f"{p.park_max_wait_s:.0f}s"],
            ["wall time", f"{run.elapsed_s:.0f}s"],
        ],
    )
    timeline = Section(
        "Chaos timeline", ["t (s)", "action", "detail"],
        [[f"{s.at_s:.1f}", s.action, s.detail] for s in run.timeline],
    )  # fmt: skip
    fate_names = [f.value for f in (Fate.OK, Fate.LATE)]
    outcomes = Section(
        "Outcome of every event id (ledger)",
        ["outcome", *fate_names, "total"],
        [
            [label, *(f"{counts.get(f, 0):,}" for f in fate_names), f"{sum(counts.values()):,}"]
            for label, counts in sorted(by_fate.items())
        ],
    )
    poison = Counter((m.topic, m.fate.value) for m in run.messages if m.facts is None)
    must_wait = {e for d in expected.unattributable() for e in expected.deals[d].event_ids}
    replayed: Counter[str] = Counter()
    for summary in run.replays:
        replayed[summary.dlq_topic.removesuffix(".dlq")] += summary.replayed
    dead = Section(
        "Dead letters by topic and class",
        ["topic", "class", "records", "expected", "note"],
    )
    for (topic, error_class), count in sorted(dlq_table.items()):
        if error_class in ("decode_error", "invalid_event"):
            expected_n, note = str(poison[(topic, error_class)]), "poison"
        elif error_class == "unattributable":
            n = sum(1 for e in must_wait if events[e].topic == topic)
            expected_n, note = f"≥{n}", "client never identified"
        elif error_class == "retry_exhausted":
            expected_n, note = "any", f"outage casualties; {replayed[topic]} replayed"
        else:
            expected_n, note = "0", "unexpected"
        dead.rows.append([_kind(run, topic), error_class, str(count), expected_n, note])
    replays = Section(
        "Replay of retry_exhausted",
        ["DLQ", "read", "replayed", "skipped (other classes)", "refused (cap)", "seconds"],
        [
            [_kind(run, s.dlq_topic.removesuffix(".dlq")) + ".dlq", str(s.read), str(s.replayed),
             str(s.skipped), str(s.refused), f"{s.elapsed_s:.1f}"]
            for s in run.replays
        ],
    )  # fmt: skip
    uploads = Counter((u["endpoint"], u["status"]) for u in run.uploads)
    metrica = Section(
        "Metrica (sandbox)",
        ["what", "value"],
        [
            [
                "orders",
                f"{len(orders):,} (expected {len(expected.in_metrica()):,} certain, "
                f"{len(expected.deals) - len(expected.certain())} uncertain)",
            ],
            ["order history entries", f"{history_entries:,}"],
            *[[f"uploads {e} {s}", f"{n:,}"] for (e, s), n in sorted(uploads.items())],
            ["records per order upload", _per_upload(run.uploads, "orders")],
            [
                "in-flight uploads of crashed runs reconciled",
                _verdicts(run.reconciled)
                if run.profile.log_level == "INFO"
                else "not counted (instances log at WARNING; the reconciler phase counts them)",
            ],
            [
                "uploads applied, answer lost (503)",
                f"{sum(1 for u in run.uploads if u.get('http_status') not in (None, 200)):,}",
            ],
        ],
    )
    return [scenario, timeline, outcomes, dead, replays, metrica]


def _verdicts(reconciled: list[dict[str, object]]) -> str:
    if not reconciled:
        return "0"
    credited = sum(1 for r in reconciled if r.get("applied"))
    ambiguous = sum(1 for r in reconciled if r.get("ambiguous"))
    return (
        f"{len(reconciled):,}: {credited:,} credited to their upload, "
        f"{len(reconciled) - credited:,} sent again ({ambiguous:,} of them ambiguous)"
    )


def _per_upload(uploads: list[dict[str, object]], endpoint: str) -> str:
    counts = [int(str(u["elements_count"])) for u in uploads if u["endpoint"] == endpoint]
    return f"{sum(counts) / len(counts):.1f}" if counts else "-"


def _kind(run: Outcome, topic: str) -> str:
    for kind, name in run.topics.items():
        if name == topic:
            return kind
    return topic
