"""Everything this process holds on lease in the shared store, in one place: claims on orders
(one updater per deal across processes) and parked events a sweep took (one handler each).

A lease lapses unless renewed: a crashed process's deals and parked events are taken over after
at most one lease. The heartbeat renews both every :data:`RENEW_EVERY_S`, apart from any other
housekeeping, so nothing else failing lets them lapse while work is in flight. Claims are given
back when their work is recorded, in the same store transaction and fenced by the claim's epoch
(:class:`ClaimsToRelease` collects those of work that went back to its lane); parked events
taken but not handled are unleased at once, so the next sweep decides them.
"""

from __future__ import annotations

import asyncio

from metrica_bridge.logs import get_logger
from metrica_bridge.store.base import Changes, Store

log = get_logger("metrica_bridge.engine.leases")

CLAIM_LEASE_S = 30.0  # an order claim; a crashed owner's lapses after this
PARK_LEASE_S = 30.0  # a parked event taken by a sweep, while it is handled
RENEW_EVERY_S = 5.0  # well inside both leases: five missed heartbeats before one lapses
# Between looks at an order another worker holds (and after losing a claim): short, then longer.
CLAIM_WAIT_S = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)


class ClaimsToRelease:
    """Claims of work that went back to its lane (retried, refused, or never used by the work
    its round claimed them for): written with the next recording, with their epochs (the fence)
    when known."""

    def __init__(self) -> None:
        self._deals: list[str] = []
        self._epochs: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._deals)

    def add(self, deal: str, epoch: int | None) -> None:
        self._deals.append(deal)
        if epoch is not None:
            self._epochs[deal] = epoch

    def take(self) -> Changes:
        """What the next recording writes for them (and forget them)."""
        changes = Changes(release_claims=self._deals, epochs=self._epochs)
        self._deals, self._epochs = [], {}
        return changes

    def restore(self, changes: Changes) -> None:
        """The recording failed: they go with the next one."""
        self._deals[:0] = changes.release_claims
        self._epochs = changes.epochs | self._epochs


async def heartbeat(store: Store, owner: str, every_s: float = RENEW_EVERY_S) -> None:
    """Renew this process's claims and parked-event leases for as long as it runs; a failed
    renewal is tried again at the next beat (the lease outlives several)."""
    while True:
        try:
            await asyncio.to_thread(store.renew_claims, owner, CLAIM_LEASE_S)
        except Exception as exc:
            log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)


async def unlease(store: Store, event_ids: list[str]) -> None:
    """Parked events taken and not handled go back to the park now, not when the lease lapses
    (the heartbeat would renew it forever)."""
    await asyncio.to_thread(store.apply, Changes(unlease=event_ids))
