"""The engine: consumed records go through the steps in rounds, thousands at a time.

This module schedules; each step lives in its own module. Records wait in the intake
(:mod:`~metrica_bridge.engine.intake`: one lane per deal or lead). A round takes every lane head
that is free to start, parses them (:mod:`~metrica_bridge.steps.parse`), asks the dedupe cache
(:mod:`~metrica_bridge.steps.dedupe`), reads what the round needs from the store in one
worker-thread hop, merging the round's identities and claiming its orders
(:mod:`~metrica_bridge.engine.round_read`), decides each event without I/O
(:mod:`~metrica_bridge.engine.decide`) and acts on the verdict: the contact and the order go to
Metrica (:mod:`~metrica_bridge.engine.uploads`), an event waits in the park, or goes to the DLQ
(:mod:`~metrica_bridge.steps.dlq`). Finished events are recorded together in ONE store transaction
(:mod:`~metrica_bridge.engine.recording`), and only then are their offsets completed and their lanes
moved on.

Every event ends with exactly one recorded outcome (delivered, skipped, stale, duplicate,
parked, dead-lettered). Infrastructure failures (the store or the broker unreachable) never
become outcomes: the event goes back to its lane and is tried again, its offset uncommitted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from metrica_bridge.engine import decide as verdicts
from metrica_bridge.engine.contacts import Contacts
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.leases import CLAIM_LEASE_S, CLAIM_WAIT_S
from metrica_bridge.engine.recording import Recording
from metrica_bridge.engine.round_read import RoundState, merge_identities_and_claim
from metrica_bridge.engine.uploads import Uploads
from metrica_bridge.engine.work import Work
from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.status_map import StatusMap
from metrica_bridge.metrics import DLQ_FAILURES
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps.batch import Batcher, RequestLimits, SendFn
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.steps.dlq import DeadLetter, DeadLetters, is_replay
from metrica_bridge.steps.persist import Recorder
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.store.base import WAITS_IDENTITY, Store

log = get_logger("metrica_bridge.engine.pipeline")

ROUND_MAX = 2_000  # events read and decided together: one store round trip each
TICK_S = 0.05  # timers (retries, linger of held events) are looked at this often
RETRY_INFRA_S = (0.5, 1.0, 2.0, 5.0, 10.0)
# A record whose own handling raised this many times (the same bytes, the same code: it will
# raise again) ends as invalid_event instead of being retried forever (DESIGN.md §5).
MAX_RECORD_FAILURES = 5
UNSETTLED_WAIT_S = 1.0  # between looks at a crashed run's unsettled upload of the order


@dataclass(frozen=True, slots=True)
class Batching:
    max_records: int
    max_bytes: int
    linger_s: float
    limits: RequestLimits | None = None  # the largest request (default: max_records, max_bytes)
    pace_delay: Callable[[], float] = lambda: 0.0  # seconds until the pace lets a request go


class Pipeline:
    def __init__(
        self,
        *,
        intake: Intake,
        store: Store,
        statuses: StatusMap,
        send: SendFn,
        batching: Batching,
        dead_letters: DeadLetters,
        timezone: str,
        hash_identifiers: bool = False,
        owner: str | None = None,
        reconciler: Reconciler | None = None,
        concurrency: int = 10_000,
    ) -> None:
        self.intake = intake
        self.store = store
        self.statuses = statuses
        self.dead_letters = dead_letters
        self.zone = ZoneInfo(timezone)
        self.owner = owner or f"mb-{uuid.uuid4().hex[:12]}"
        self.concurrency = concurrency
        batcher = Batcher(
            send,
            on_settled=lambda endpoint, batch: self.uploads.settled(endpoint, batch),
            max_records=batching.max_records,
            max_bytes=batching.max_bytes,
            linger_s=batching.linger_s,
            limits=batching.limits,
            pace_delay=batching.pace_delay,
        )
        contacts = Contacts(hash_identifiers, self.zone)
        self.uploads = Uploads(batcher, contacts, store, reconciler, self, self.owner, self.zone)
        # A crashed run's upload of an order holds the order's other events for as long as it
        # may still arrive in Metrica, and as long again for its event to come back.
        self._unsettled_wait = (
            None if reconciler is None else reconciler.reach * 2 + timedelta(seconds=CLAIM_LEASE_S)
        )
        self.dedupe = Dedupe(store)
        self.recording = Recording(
            Recorder(store), self.dedupe, self.owner, list(intake.kinds), self
        )
        self._dead: list[DeadLetter[Work]] = []  # to be produced to the DLQ
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="engine")

    async def close(self) -> None:
        """Stop at once (after the runners drained what they could)."""
        tasks = [t for t in (self._loop_task,) if t is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.uploads.batcher.close()

    def waiting_to_send(self) -> int:
        """Records waiting in the batcher (the quota governor's demand)."""
        return self.uploads.batcher.waiting()

    def flush_soon(self) -> None:
        """Send what the batcher holds without waiting for its linger (a revocation drains)."""
        self.uploads.batcher.flush_soon()

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug, not an event's fault: log it, keep going
                log.error("engine cycle failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    async def _cycle(self) -> None:
        if self._dead:
            dead, self._dead = self._dead, []
            self.spawn(
                self.dead_letters.send_all(dead, self._dead_lettered, _count_failure, RETRY_INFRA_S)
            )
        if self.recording:
            await self.recording.record()
        batch = self.intake.take(min(ROUND_MAX, self.concurrency - self.intake.running()))
        if batch:
            await self._start(batch)
            await asyncio.sleep(0)
            return
        if not self.recording and not self._dead:
            await self.intake.idle(TICK_S)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        self.intake.wake()

    # -- a round -------------------------------------------------------------------------------
    async def _start(self, batch: list[Work]) -> None:
        ready = await self.intake.parse(batch, self.retry, self._fail)
        if not ready:
            return
        # A replayed record is a dead letter coming back, and only the store can say what became
        # of its event since: this process may remember it parked (then finished by another
        # process's sweeper) or dead-lettered (then delivered by an earlier replay elsewhere),
        # and would drop the replay as a duplicate, or send it twice.
        replays = {w.ledger_id for w in ready if is_replay(w.source)}
        known, missing = self.dedupe.known(w.ledger_id for w in ready if w.ledger_id not in replays)
        missing.extend(replays)
        try:
            state = await asyncio.to_thread(
                merge_identities_and_claim,
                self.store,
                self.dedupe,
                ready,
                known,
                missing,
                owner=self.owner,
                unsettled_since=self._unsettled_since(),
            )
        except Exception as exc:
            # The store failed us: one line for the round, not one per event.
            delay = RETRY_INFRA_S[min(ready[0].attempts, len(RETRY_INFRA_S) - 1)]
            log.error(
                "round failed; its events are retried",
                events=len(ready),
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            for work in ready:
                self.retry(work, exc, quiet=True)
            return
        now = datetime.now(UTC)
        for work in ready:
            try:
                self._act(work, verdicts.decide(work, state, self.statuses, now), state)
            except Exception as exc:
                self._fail(work, exc)
        # Claimed for work that did not take it after all (it failed on the way): let it go now
        # rather than when the lease lapses.
        taken = {w.claim for w in ready if w.claim is not None}
        for deal in state.claimed - taken:
            self.recording.releases.add(deal, state.epochs.get(deal))

    def _unsettled_since(self) -> datetime | None:
        wait = self._unsettled_wait
        return None if wait is None else datetime.now(UTC) - wait

    def _act(self, work: Work, verdict: verdicts.Verdict, state: RoundState) -> None:
        claim = getattr(verdict, "claim", None)
        if claim is not None:
            work.claim, work.epoch = claim, state.epochs.get(claim)
        if isinstance(verdict, verdicts.Duplicate):
            if work.released:  # handled already: leave the park (or be leased forever)
                work.unpark = True
            log.debug("duplicate", previous=verdict.previous, **work.log_fields())
            self.finish(work, Outcome.DUPLICATE)
        elif isinstance(verdict, verdicts.DeadLetter):
            self.dead_letter(work, verdict.error_class, verdict.reason)
        elif isinstance(verdict, verdicts.Park):
            self._park(work, verdict)
        elif isinstance(verdict, verdicts.ClaimBusy):
            work.claim_waits += 1
            self.back(work, CLAIM_WAIT_S[min(work.claim_waits, len(CLAIM_WAIT_S)) - 1])
        elif isinstance(verdict, verdicts.Unsettled):
            log.info("order waits for a crashed run's upload to settle", **work.log_fields())
            self.back(work, UNSETTLED_WAIT_S)
        else:
            if verdict.order is not None:
                self.uploads.prepare_order(work, verdict.order, state.inflight.get(work.ledger_id))
            self.uploads.start(work, verdict.identity)

    def _park(self, work: Work, verdict: verdicts.Park) -> None:
        """Wait in the park for the client's identity or the deal's creation time."""
        if work.released:
            # Still waiting (consent withdrawn since the sweep, say): it stays parked, and its
            # lease ends now (the heartbeat would renew it forever) so the next sweep decides.
            work.unlease = True
            self.finish(work, None)
            return
        work.park = work.parked(verdict.client, verdict.deal, verdict.version, verdict.waits_for)
        waiting = "client's identity" if verdict.waits_for == WAITS_IDENTITY else "creation time"
        log.debug(f"parked until the {waiting} arrives", **work.log_fields())
        self.finish(work, Outcome.PARKED)

    # -- how events end ------------------------------------------------------------------------
    def dead_letter(self, work: Work, error_class: ErrorClass, reason: str) -> None:
        work.order = work.order_state = None  # nothing of the order was sent
        self._dead.append(DeadLetter(work, work.source, error_class, reason, work.attempts + 1))
        self.intake.wake()

    def _dead_lettered(self, item: DeadLetter[Work]) -> None:
        log.warning(
            "dead-lettered",
            error_class=item.error_class.value,
            reason=item.reason,
            **item.subject.log_fields(),
        )
        self.finish(item.subject, Outcome.DEAD_LETTERED, item.error_class.value)

    def finish(self, work: Work, outcome: Outcome | None, detail: str = "") -> None:
        self.recording.finish(work, outcome, detail)

    def done(self, work: Work) -> None:
        """Recorded: its offset completes and its lane moves on."""
        self.intake.done(work)
        if work.on_done is not None:
            work.on_done(work)

    def _fail(self, work: Work, error: Exception) -> None:
        """Handling this record raised: try it again, alone, unless it has failed so often that
        it would fail forever; then it ends as invalid_event (type only: the text may quote
        personal data)."""
        work.failures += 1
        if work.failures < MAX_RECORD_FAILURES:
            self.retry(work, error)
            return
        log.error(
            "event handling keeps failing; dead-lettered",
            error=f"{type(error).__name__}: {error}",
            failures=work.failures,
            **work.log_fields(),
        )
        if work.claim is not None:
            self.recording.releases.add(work.claim, None)
        work.reset()
        reason = f"handling failed {work.failures} times: {type(error).__name__}"
        self.dead_letter(work, ErrorClass.INVALID_EVENT, reason)

    def retry(self, work: Work, error: BaseException | None, *, quiet: bool = False) -> None:
        """An infrastructure failure: the event is not handled; try it again from the start."""
        delay = RETRY_INFRA_S[min(work.attempts, len(RETRY_INFRA_S) - 1)]
        work.attempts += 1
        if not quiet:
            log.error(
                "event handling failed; retrying",
                error=f"{type(error).__name__}: {error}",
                retry_in_s=delay,
                **work.log_fields(),
            )
        self.back(work, delay)

    def back(self, work: Work, delay: float) -> None:
        """Back to its lane, to start again after ``delay`` (its claim given back)."""
        if work.claim is not None:
            self.recording.releases.add(work.claim, work.epoch)
        work.reset()
        self.intake.back(work, delay)


def _count_failure(item: DeadLetter[Work]) -> None:
    DLQ_FAILURES.labels(topic=item.record.topic).inc()
