"""Finished events, recorded: every cycle, what finished since the last one is written in ONE
store transaction (outcomes, order states fenced by their claims, parked events, contacts
Metrica holds, claims given back), and only then are their offsets completed and their lanes
moved on (:class:`Scheduler`). The recorder (:mod:`~metrica_bridge.steps.persist`) leaves out,
and names, a part whose claim was lost or that the store refuses, so one event never holds the
others (issue 16): a lost claim decides again, a refused part is dead-lettered.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from metrica_bridge.engine.leases import CLAIM_WAIT_S, ClaimsToRelease
from metrica_bridge.engine.work import Work
from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import END_TO_END_LATENCY
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.steps.persist import Recorder, changes_of
from metrica_bridge.store.base import Changes, ClaimLost, LedgerEntry, StoreError

log = get_logger("metrica_bridge.engine.recording")


class Scheduler(Protocol):
    """What recording asks of the pipeline."""

    def back(self, work: Work, delay: float) -> None: ...
    def dead_letter(self, work: Work, error_class: ErrorClass, reason: str) -> None: ...
    def done(self, work: Work) -> None: ...
    def wake(self) -> None: ...


class Recording:
    def __init__(
        self,
        recorder: Recorder,
        dedupe: Dedupe,
        owner: str,
        topics: list[str],
        scheduler: Scheduler,
    ) -> None:
        self._recorder = recorder
        self._dedupe = dedupe
        self._owner = owner
        self._scheduler = scheduler
        self._finished: list[Work] = []
        self.releases = ClaimsToRelease()  # claims of work that went back to its lane
        self._latency = {topic: END_TO_END_LATENCY.labels(topic=topic) for topic in topics}

    def __bool__(self) -> bool:
        """Something to write."""
        return bool(self._finished) or bool(self.releases)

    def finish(self, work: Work, outcome: Outcome | None, detail: str = "") -> None:
        """The event ends (``None``: it goes back to the park, unleased); written next cycle."""
        work.outcome = outcome
        if outcome is not None and outcome not in (Outcome.DUPLICATE, Outcome.PARKED):
            ack = work.ack
            uploading_id = ack.uploading_id if ack is not None else None
            work.ledger = LedgerEntry(
                work.ledger_id, work.source.topic, outcome, detail, uploading_id
            )
            if work.released:
                work.unpark = True
        self._finished.append(work)
        self._scheduler.wake()

    async def record(self) -> None:
        works, self._finished = self._finished, []
        free = self.releases.take()
        free.owner = self._owner
        whole = Changes(owner=self._owner)
        for work in works:
            changes_of(work, whole)
        whole.release_claims.extend(free.release_claims)
        whole.epochs.update(free.epochs)

        def parts() -> list[Changes]:
            return [*(changes_of(w, Changes(owner=self._owner)) for w in works), free]

        try:
            failed = await self._recorder.record(whole, parts)
        except Exception:
            # Not the store being down (the recorder waits that out): still, nothing finished
            # may be lost, so these go round again with the next cycle.
            self._finished[:0] = works
            self.releases.restore(free)
            raise
        if len(works) in failed:
            log.error(
                "releasing claims refused",
                deals=len(free.release_claims),
                error=str(failed[len(works)]),
            )
        recorded: list[Work] = []
        for index, work in enumerate(works):
            error = failed.get(index)
            if error is None:
                recorded.append(work)
            elif isinstance(error, ClaimLost):
                self._claim_lost(work)
            elif self._refused(work, error):
                recorded.append(work)
        self._recorded(recorded)

    def _recorded(self, recorded: list[Work]) -> None:
        self._recorder.count(
            Counter((w.source.topic, w.outcome) for w in recorded if w.outcome is not None)
        )
        self._dedupe.remember([w.ledger for w in recorded if w.ledger is not None])
        # A copy of a parked event arriving while it waits (a CRM retry) is a duplicate, not a
        # second parked event that would never get an outcome of its own.
        self._dedupe.remember(
            [
                LedgerEntry(w.park.event_id, w.source.topic, Outcome.PARKED)
                for w in recorded
                if w.park is not None
            ]
        )
        for work in recorded:
            if work.outcome == Outcome.DELIVERED and work.ack is not None and work.event:
                latency = work.ack.acked_at - work.event.occurred_at.timestamp()
                self._latency[work.source.topic].observe(max(0.0, latency))
            self._scheduler.done(work)

    def _claim_lost(self, work: Work) -> None:
        """Its lease lapsed and another process took the deal (and may have written a newer
        state): nothing of it was written; it decides again, from what the store holds now."""
        log.warning("order claim lost before recording; deciding again", **work.log_fields())
        work.claim = work.epoch = None  # not ours: nothing to release
        self._scheduler.back(work, CLAIM_WAIT_S[0])

    def _refused(self, work: Work, error: StoreError) -> bool:
        """The store refuses what this work would write, on its own (a value it cannot hold):
        writing it again fails forever. It ends dead-lettered as ``invalid_event`` with the
        reason (and none of its order state); True when it ends now, without a ledger entry,
        because even that was refused (the DLQ has the record)."""
        log.error(
            "the store refuses the event's outcome; dead-lettered",
            error=str(error),
            outcome=work.outcome,
            **work.log_fields(),
        )
        if work.outcome == Outcome.DEAD_LETTERED:
            work.ledger = None  # the DLQ holds the record already
            if work.claim is not None:  # released apart (the heartbeat would renew it forever)
                self.releases.add(work.claim, work.epoch)
            work.claim = work.epoch = None
            return True
        work.order_state = work.contact_uploaded = work.park = work.ledger = None
        work.unlease = work.unpark = False
        self._scheduler.dead_letter(
            work, ErrorClass.INVALID_EVENT, f"the store refuses it: {error}"
        )
        return False
