"""The chaos scenario (issue 7): a simulated CRM stream through several ``metrica-bridge run``
processes per topic on one PostgreSQL store, while instances join, leave and get SIGKILLed and
the sandbox answers 503s, bursts of 429s and one outage longer than the retry budget; then a
replay of the ``retry_exhausted`` dead letters, and a settle. :func:`run_scenario` returns what
the world looks like afterwards (:class:`Outcome`); :mod:`tests.support.accounting` judges it.

Every random choice comes from the profile's seed, so a failing run can be looked at again
(the interleaving with the processes is of course not reproducible).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT, Settings
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.replay import ReplayError, ReplayOptions, ReplaySummary, replay
from metrica_bridge.sandbox import QuotaLimits, SandboxServer
from metrica_bridge.simulate import SimulatedMessage, SimulationConfig, generate, produce
from metrica_bridge.steps.dlq import dlq_topic
from metrica_bridge.store import open_store
from tests.support import crm
from tests.support.kafka import TEST_CONSUMER_PROPERTIES, ConsumedMessage, TopicFactory, consume_all
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN, ServiceProcess, service_env

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
KINDS = ("lead-created", "deal-status-changed", "payment-received")
# Replay runs join their own group: these make a join take about a second on tansu.
REPLAY_GROUP = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "500"}


@dataclass(frozen=True)
class Profile:
    """How big and how long; the short one runs in ``make test``, the long one in ``make chaos``."""

    name: str
    events: int  # simulated messages, duplicates and poison included
    partitions: int  # per topic
    instances: int  # most consumer processes per topic at once
    fault_s: float  # how long faults and process chaos go on
    produce_s: float  # the stream is produced evenly over this
    actions: dict[str, int]  # how many of each: join, leave, kill (and restart), burst (429s)
    outage_at_s: float
    outage_s: float  # longer than retry_budget_s, so some events end as retry_exhausted
    retry_budget_s: float
    retry_max_attempts: int
    park_max_wait_s: float  # longer than any lead-topic stall, so only anonymous clients expire
    settle_s: float  # most time to wait for every event to be recorded
    requests_per_second: float  # per process: the sandbox allows 30 per client IP in all
    seed: int = 7
    error_rate: float = 0.10
    quota_burst: int = 25
    # Uploads Metrica applies and then answers with a 503 (the answer lost): the sender retries
    # them, and a process killed meanwhile leaves an open intent for the reconciler.
    apply_then_fail_rate: float = 0.0
    # Every request takes this long in the sandbox (then is applied): a kill meanwhile leaves
    # an upload that lands with nobody to record it.
    latency_ms: float = 0.0
    # The reconciler's verdicts are read from the instances' INFO lines (the reconciler phase).
    log_level: str = "WARNING"


SHORT = Profile(
    name="short",
    events=2_000,
    partitions=3,
    instances=2,
    fault_s=40,
    produce_s=30,
    actions={"join": 2, "leave": 1, "kill": 2, "burst": 2},
    outage_at_s=14,
    outage_s=9,
    retry_budget_s=4,
    retry_max_attempts=6,
    park_max_wait_s=25,
    settle_s=120,
    requests_per_second=5,
)

# The reconciler phase (issue 16, item 9): the retry budget (75 s) is longer than the old fixed
# 60 s known-upload window, uploads are applied and then answered with a 503, every request
# takes 1.5 s, and instances are SIGKILLed while their uploads are unanswered; every crashed
# run's intent must be credited to its own upload or sent again, never to another's. No outage:
# nothing exhausts its retries.
RECONCILE = Profile(
    name="reconcile",
    events=1_800,
    partitions=3,
    instances=2,
    fault_s=60,
    produce_s=45,
    actions={"join": 1, "leave": 1, "kill": 10, "burst": 0},
    outage_at_s=0,
    outage_s=0,
    retry_budget_s=75,
    retry_max_attempts=12,
    park_max_wait_s=25,
    settle_s=240,
    requests_per_second=5,
    seed=11,
    error_rate=0.05,
    apply_then_fail_rate=0.25,
    latency_ms=1_500,
    log_level="INFO",
)

LONG = Profile(
    name="long",
    events=30_000,
    partitions=6,
    instances=3,
    fault_s=300,
    produce_s=240,
    actions={"join": 10, "leave": 8, "kill": 10, "burst": 8},
    outage_at_s=110,
    outage_s=20,
    retry_budget_s=5,
    retry_max_attempts=8,
    park_max_wait_s=60,
    settle_s=420,
    requests_per_second=3,
)


@dataclass(frozen=True)
class Entry:
    """One ledger row."""

    topic: str
    outcome: str
    detail: str
    upload_id: str | None
    recorded_at: datetime


@dataclass
class Step:
    at_s: float
    action: str
    detail: str


@dataclass
class Outcome:
    """Everything the accounting needs, read after the run from Kafka, the store and Metrica."""

    profile: Profile
    messages: list[SimulatedMessage]
    topics: dict[str, str]  # kind -> topic name
    ledger: dict[str, Entry]  # by event id
    parked: list[str]  # event ids still parked
    claims: list[tuple[str, str, datetime]]  # order claims left: deal, owner, expiry
    identified_at: dict[str, datetime]  # client -> when the store first had an identifier
    dead_letters: list[ConsumedMessage]
    orders: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    uploads: list[dict[str, Any]]
    replays: list[ReplaySummary]
    replay_errors: list[str]
    timeline: list[Step]
    exit_codes: dict[str, int | None]  # instance name -> exit code after SIGTERM (None: hung)
    token_leaks: list[str]  # log files that contain the token
    reconciled: list[dict[str, Any]]  # the reconciler's verdicts, from the instances' logs
    settled: bool  # everything was recorded before the settle timeout
    elapsed_s: float
    instances_started: int
    crashes: list[str]  # instances that died on their own (and were replaced)
    kills: int


@dataclass
class Instance:
    name: str
    topic: str
    process: ServiceProcess


@dataclass
class Fleet:
    """``metrica-bridge run --topic X`` processes, several per topic, started and stopped."""

    env: dict[str, str]
    log_dir: Path
    clock: Callable[[], float]
    timeline: list[Step]
    running: dict[str, list[Instance]] = field(default_factory=dict)
    leaving: list[Instance] = field(default_factory=list)
    every: list[Instance] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    kills: int = 0
    crashes: list[str] = field(default_factory=list)

    def supervise(self) -> None:
        """Like an orchestrator: an instance that died on its own is noted and replaced."""
        for topic, instances in self.running.items():
            for instance in [i for i in instances if not i.process.alive()]:
                instances.remove(instance)
                proc = instance.process.proc
                code = proc.returncode if proc is not None else None
                self.crashes.append(f"{instance.name} exited {code}: {_last_error(instance)}")
                self.note("crash", f"{instance.name} exited {code} on its own; replaced")
                self.join(topic)

    def note(self, action: str, detail: str) -> None:
        self.timeline.append(Step(round(self.clock(), 1), action, detail))

    def join(self, topic: str) -> Instance:
        name = f"{_short(topic)}#{len(self.every) + 1}"
        process = ServiceProcess(self.env, self.log_dir / f"{name}.log", ["--topic", topic])
        instance = Instance(name, topic, process.start())
        self.running.setdefault(topic, []).append(instance)
        self.every.append(instance)
        self.note("join", f"{name} starts ({len(self.running[topic])} on {_short(topic)})")
        return instance

    def leave(self, instance: Instance) -> None:
        """SIGTERM: a graceful leave; its exit code is collected at the end."""
        self.running[instance.topic].remove(instance)
        assert instance.process.proc is not None
        if instance.process.alive():
            instance.process.proc.terminate()
        self.leaving.append(instance)
        self.note("leave", f"{instance.name} gets SIGTERM")

    def kill(self, instance: Instance) -> None:
        self.running[instance.topic].remove(instance)
        instance.process.kill()
        self.kills += 1
        self.exit_codes[instance.name] = -9
        self.note("SIGKILL", f"{instance.name}")

    def ensure(self, topic: str, count: int) -> None:
        while len(self.running.get(topic, [])) < count:
            self.join(topic)

    def stop(self, timeout_s: float = 60) -> None:
        for instances in self.running.values():
            for instance in list(instances):
                self.leave(instance)
        deadline = time.monotonic() + timeout_s
        for instance in self.leaving:
            proc = instance.process.proc
            assert proc is not None
            try:
                code: int | None = proc.wait(max(0.1, deadline - time.monotonic()))
            except Exception:
                instance.process.kill()
                code = None
            self.exit_codes[instance.name] = code
        self.leaving.clear()

    def kill_all(self) -> None:
        for instance in self.every:
            instance.process.kill()


def _last_error(instance: Instance) -> str:
    lines = [line.strip() for line in instance.process.logs().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line and not line.startswith(("│", "╰"))]
    return (errors or lines or ["(no output)"])[-1][:300]


def _short(topic: str) -> str:
    return topic.split("-", 1)[0] if not topic.startswith("deal") else "deal"


def run_scenario(
    profile: Profile,
    *,
    bootstrap: str,
    topics: TopicFactory,
    postgres_url: str,
    workdir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> Outcome:
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    names = topics.many(dict.fromkeys(KINDS, profile.partitions))
    dlqs = [dlq_topic(name) for name in names.values()]
    topics.created.extend(dlqs)  # the service creates them; the fixture deletes them
    config = SimulationConfig(
        count=profile.events,
        seed=profile.seed,
        duplicates=0.03,
        late=0.05,
        poison=0.02,
        topics={EventKind(kind): name for kind, name in names.items()},
    )
    messages = list(generate(config, CODEC))
    status_map = workdir / "status_map.yaml"
    status_map.write_text(STATUS_MAP)
    log_dir = workdir / "logs"
    log_dir.mkdir(exist_ok=True)
    rng = random.Random(profile.seed)
    timeline: list[Step] = []
    replays: list[ReplaySummary] = []
    replay_errors: list[str] = []
    limits = QuotaLimits(daily=10_000_000)  # the daily budget is not under test here
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0, limits=limits) as sandbox:
        crm.push_status_map(sandbox.url)
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=sandbox.url,
            store_url=postgres_url,
            topics=names,
            status_map=status_map,
            retry_budget_s=profile.retry_budget_s,
            retry_max_attempts=profile.retry_max_attempts,
            park_max_wait_s=profile.park_max_wait_s,
            metrica_requests_per_second=profile.requests_per_second,
            metrica_daily_budget=10_000_000,
            batch_linger_ms=300,
            commit_interval_ms=200,
            log_level=os.environ.get("CHAOS_LOG_LEVEL", profile.log_level),
        )
        _watch_identities(postgres_url)
        fleet = Fleet(env, log_dir, clock, timeline)
        try:
            sandbox.set_faults(
                seed=profile.seed,
                error_rate=profile.error_rate,
                error_status=503,
                apply_then_fail_rate=profile.apply_then_fail_rate,
                latency_ms=profile.latency_ms,
            )
            fleet.note("faults", f"{profile.error_rate:.0%} of requests answer 503")
            if profile.latency_ms:
                fleet.note("faults", f"every request takes {profile.latency_ms / 1000:.1f}s")
            if profile.apply_then_fail_rate:
                fleet.note(
                    "faults",
                    f"{profile.apply_then_fail_rate:.0%} of uploads applied, then answered 503",
                )
            for name in names.values():
                fleet.join(name)
            producer = threading.Thread(
                target=_produce, args=(bootstrap, messages, profile.produce_s), daemon=True
            )
            producer.start()
            fleet.note("produce", f"{len(messages)} messages over {profile.produce_s:.0f}s")
            _chaos(profile, fleet, sandbox, list(names.values()), rng, clock, progress)
            producer.join(timeout=120)
            sandbox.set_faults(
                error_rate=0.0,
                outage_seconds=0,
                quota_burst={"count": 0},
                apply_then_fail_rate=0.0,
                latency_ms=0.0,
            )
            fleet.note("faults", "off")
            for name in names.values():
                fleet.ensure(name, 1)
            progress(f"[{clock():.0f}s] faults off; waiting for every event to be recorded")
            expected_ids = {m.event_id for m in messages if m.facts is not None and m.event_id}
            settled = _wait(
                lambda: _recorded(postgres_url, expected_ids, retry_exhausted_ok=True),
                profile.settle_s,
                fleet,
            )
            fleet.note("settled" if settled else "settle timeout", "before the replay")
            settings = _replay_settings(bootstrap, names, env["CONSUMER_GROUP_PREFIX"])
            # As the runbook says: replay, let it settle, and replay again until a round finds
            # nothing new (an event can exhaust its retries while the first round is reading).
            for round_ in range(1, REPLAY_ROUNDS + 1):
                replayed = 0
                for dlq in dlqs:
                    try:
                        summary = replay(
                            settings,
                            ReplayOptions(dlq, error_classes=frozenset({"retry_exhausted"})),
                        )
                    except ReplayError as exc:
                        replay_errors.append(f"{dlq}: {exc}")
                        fleet.note("replay failed", f"{_short(dlq)}.dlq: {exc}")
                        continue
                    replays.append(summary)
                    replayed += summary.replayed
                    fleet.note(
                        "replay",
                        f"round {round_}, {_short(dlq)}.dlq: {summary.replayed} re-published",
                    )
                if round_ > 1 and replayed == 0:
                    break
                progress(f"[{clock():.0f}s] replayed; waiting for the replayed events")
                settled = _wait(
                    lambda: _recorded(postgres_url, expected_ids, retry_exhausted_ok=False),
                    profile.settle_s,
                    fleet,
                )
                fleet.note(
                    "settled" if settled else "settle timeout", f"after replay round {round_}"
                )
        finally:
            fleet.stop()
            fleet.note("stop", "every instance got SIGTERM")
        orders = sandbox.orders(COUNTER)
        contacts = sandbox.contacts(COUNTER)
        uploads = sandbox.uploads(COUNTER)
    ledger, parked, claims, identified_at = _read_store(postgres_url)
    floor = sum(1 for m in messages if m.facts is None)  # the poison, at least
    dead_letters = consume_all(bootstrap, dlqs, floor, timeout=30, settle_s=2.0)
    leaks = [
        p.name for p in sorted(log_dir.glob("*.log")) if TOKEN in p.read_text(errors="replace")
    ]
    return Outcome(
        profile=profile,
        messages=messages,
        topics=names,
        ledger=ledger,
        parked=parked,
        claims=claims,
        identified_at=identified_at,
        dead_letters=dead_letters,
        orders=orders,
        contacts=contacts,
        uploads=uploads,
        replays=replays,
        replay_errors=replay_errors,
        timeline=timeline,
        exit_codes=fleet.exit_codes,
        token_leaks=leaks,
        reconciled=_reconciled(log_dir),
        settled=settled,
        elapsed_s=clock(),
        instances_started=len(fleet.every),
        crashes=fleet.crashes,
        kills=fleet.kills,
    )


def _reconciled(log_dir: Path) -> list[dict[str, Any]]:
    verdicts = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if RECONCILED in line:
                with contextlib.suppress(ValueError):
                    verdicts.append(json.loads(line))
    return verdicts


RECONCILED = "in-flight upload of a previous run reconciled"


def _produce(bootstrap: str, messages: list[SimulatedMessage], over_s: float) -> None:
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        produce(messages, producer, rate=len(messages) / over_s)


def _chaos(
    profile: Profile,
    fleet: Fleet,
    sandbox: SandboxServer,
    names: list[str],
    rng: random.Random,
    clock: Callable[[], float],
    progress: Callable[[str], None],
) -> None:
    """The profile's deck of actions, shuffled, spread evenly over ``fault_s``; the outage at
    its time. A SIGKILLed instance is restarted at once, as an orchestrator would; a join on a
    full topic becomes a SIGKILL and a leave on a topic with one instance becomes a join."""
    deck = [action for action, n in profile.actions.items() for _ in range(n)]
    rng.shuffle(deck)
    gap = profile.fault_s / (len(deck) + 1)
    outage_done = profile.outage_s <= 0
    for index, action in enumerate(deck, start=1):
        _sleep_until(clock, index * gap + rng.uniform(-gap / 3, gap / 3), fleet)
        if not outage_done and clock() >= profile.outage_at_s:
            sandbox.set_faults(outage_seconds=profile.outage_s)
            fleet.note("outage", f"every request answers 503 for {profile.outage_s:.0f}s")
            outage_done = True
        topic = rng.choice(names)
        running = fleet.running.get(topic, [])
        if action == "join" and len(running) >= profile.instances:
            action = "kill"
        if action == "leave" and len(running) <= 1:
            action = "join"
        if action == "burst":
            sandbox.set_faults(
                quota_burst={"count": profile.quota_burst, "error_type": "quota_requests_by_ip"}
            )
            fleet.note("429 burst", f"the next {profile.quota_burst} requests get quota_*")
        elif action == "join":
            fleet.join(topic)
        elif action == "kill":
            fleet.kill(rng.choice(running))
            fleet.join(topic)
        else:
            fleet.leave(rng.choice(running))
        progress(f"[{clock():.0f}s] {fleet.timeline[-1].action} {fleet.timeline[-1].detail}")
    if not outage_done:
        _sleep_until(clock, profile.outage_at_s, fleet)
        sandbox.set_faults(outage_seconds=profile.outage_s)
        fleet.note("outage", f"every request answers 503 for {profile.outage_s:.0f}s")
    _sleep_until(clock, max(profile.fault_s, profile.outage_at_s + profile.outage_s), fleet)


def _sleep_until(clock: Callable[[], float], at_s: float, fleet: Fleet) -> None:
    while clock() < at_s:
        fleet.supervise()
        time.sleep(min(0.5, max(0.0, at_s - clock())))


REPLAY_ROUNDS = 3


def _replay_settings(bootstrap: str, names: dict[str, str], prefix: str) -> Settings:
    return Settings.model_validate(
        {
            "kafka_bootstrap_servers": bootstrap,
            "kafka_properties": {**TEST_CONSUMER_PROPERTIES, **REPLAY_GROUP},
            "topic_lead_created": names["lead-created"],
            "topic_deal_status_changed": names["deal-status-changed"],
            "topic_payment_received": names["payment-received"],
            "consumer_group_prefix": prefix,
        }
    )


# When each client first had an identifier, to the millisecond: the store keeps no such time,
# and the park's verdicts are judged against it. A trigger in the test's own database.
_WATCH_IDENTITIES = """
CREATE TABLE chaos_identified (client_uniq_id text PRIMARY KEY, at timestamptz NOT NULL);
CREATE FUNCTION chaos_identified() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.has_identifier THEN
        INSERT INTO chaos_identified VALUES (NEW.client_uniq_id, clock_timestamp())
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_identified AFTER INSERT OR UPDATE ON identities
    FOR EACH ROW EXECUTE FUNCTION chaos_identified();
"""


def _watch_identities(url: str) -> None:
    open_store(url).close()  # the service's own migrations, before any instance starts
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_WATCH_IDENTITIES)


def _wait(
    predicate: Callable[[], bool], timeout_s: float, fleet: Fleet, poll_s: float = 2.0
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.supervise()
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def _recorded(url: str, expected: set[str], *, retry_exhausted_ok: bool) -> bool:
    """Every event has an outcome, nothing is parked (and none is left retry_exhausted)."""
    try:
        with psycopg.connect(url) as conn:
            ids = {r[0] for r in conn.execute("SELECT event_id FROM ledger")}
            parked = conn.execute("SELECT count(*) FROM parked").fetchone()
            exhausted = conn.execute(
                "SELECT count(*) FROM ledger WHERE outcome = 'dead_lettered'"
                " AND detail = 'retry_exhausted'"
            ).fetchone()
            quiet = conn.execute(
                "SELECT coalesce(max(recorded_at) < now() - interval '20 seconds', true)"
                " FROM ledger"
            ).fetchone()
    except psycopg.Error:
        return False
    if parked is None or exhausted is None or quiet is None:
        return False
    # A replayed event dead-lettered again keeps retry_exhausted in the ledger (reported by the
    # accounting), so after the replay a quiet ledger with nothing parked counts as settled too.
    settled = retry_exhausted_ok or exhausted[0] == 0 or bool(quiet[0])
    return expected <= ids and parked[0] == 0 and settled


def _read_store(
    url: str,
) -> tuple[dict[str, Entry], list[str], list[tuple[str, str, datetime]], dict[str, datetime]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id, topic, outcome, detail, upload_id, recorded_at FROM ledger"
        )
        ledger = {row[0]: Entry(*row[1:]) for row in rows}
        parked = [row[0] for row in conn.execute("SELECT event_id FROM parked")]
        claims = [
            (row[0], row[1], row[2])
            for row in conn.execute("SELECT deal_id, owner, expires_at FROM order_claims")
        ]
        identified = {
            row[0]: row[1]
            for row in conn.execute("SELECT client_uniq_id, at FROM chaos_identified")
        }
    return ledger, parked, claims, identified
