"""What this process knows of the contacts Metrica holds, so a contact is uploaded only when it
changed: one object for the three things that used to be three loose caches.

* the fingerprint each client's contact renders to, by identity version (rendering a contact only
  to learn that Metrica holds it already is most of an order event's cost otherwise);
* the contact upload in flight per client, which later events of the client wait on;
* the fingerprints Metrica acknowledged but the store does not hold yet (two leads of one client
  in flight at once); bounded, the store is the truth.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from zoneinfo import ZoneInfo

from metrica_bridge.steps import enrich
from metrica_bridge.steps.batch import Pending
from metrica_bridge.store.base import Identity

CACHED_CLIENTS = 20_000  # filled early in a stream, so memory stays flat after

Rendered = tuple[dict[str, Any], bytes, str]  # record, encoded, fingerprint


class Contacts:
    def __init__(self, hash_identifiers: bool, zone: ZoneInfo) -> None:
        self._hash = hash_identifiers
        self._zone = zone
        self._versions: dict[str, tuple[tuple[object, ...], str]] = {}
        self._sending: dict[str, tuple[str, Pending]] = {}
        self._acknowledged: OrderedDict[str, str] = OrderedDict()

    def render(self, identity: Identity) -> Rendered:
        record, encoded, fingerprint = enrich.contact(identity, self._hash, self._zone)
        return record, encoded, fingerprint

    def stale(self, identity: Identity) -> tuple[str, Rendered | None] | None:
        """The contact's fingerprint (and its rendering, when it had to be rendered) if Metrica
        may not hold it yet; None when it does."""
        client = identity.client_uniq_id
        version: tuple[object, ...] = (
            identity.client_ids,
            identity.phones,
            identity.emails,
            identity.name,
            identity.consent,
        )
        known = self._versions.get(client)
        rendered = None
        if known is not None and known[0] == version:
            fingerprint = known[1]  # rendered already for an earlier event of this client
        else:
            rendered = self.render(identity)
            fingerprint = rendered[2]
            self._versions[client] = (version, fingerprint)
            if len(self._versions) > CACHED_CLIENTS:
                self._versions.pop(next(iter(self._versions)))
        if fingerprint in (identity.uploaded_fingerprint, self._acknowledged.get(client)):
            return None
        return fingerprint, rendered

    def on_its_way(self, client: str, fingerprint: str) -> Pending | None:
        """The unanswered upload already carrying this very contact, if any."""
        current = self._sending.get(client)
        if current is not None and current[0] == fingerprint and current[1].result is None:
            return current[1]
        return None

    def sending(self, client: str, fingerprint: str, pending: Pending) -> None:
        self._sending[client] = (fingerprint, pending)

    def settled(self, client: str, pending: Pending, acknowledged: str | None) -> None:
        """The upload answered; ``acknowledged``: the fingerprint Metrica holds now."""
        entry = self._sending.get(client)
        if entry is not None and entry[1] is pending:
            del self._sending[client]
        if acknowledged is not None:
            self._acknowledged[client] = acknowledged
            self._acknowledged.move_to_end(client)
            if len(self._acknowledged) > CACHED_CLIENTS:
                self._acknowledged.popitem(last=False)
