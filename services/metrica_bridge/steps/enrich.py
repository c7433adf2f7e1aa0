"""Enrichment: identities learned from leads, and the contact record Metrica needs before any
order of that client (orders bind only through contacts uploaded first).

``consent = false`` strips phones and emails; with ``HASH_IDENTIFIERS`` they travel as md5 of
the normalised value (``phones_md5`` / ``emails_md5``) instead of in clear.
"""

from __future__ import annotations

import hashlib
from typing import Any
from zoneinfo import ZoneInfo

from metrica_bridge import normalize
from metrica_bridge.events import LeadCreated
from metrica_bridge.metrica.records import ContactRecord
from metrica_bridge.steps.batch import encode
from metrica_bridge.store.base import Identity, IdentityUpdate


def identity_update(lead: LeadCreated) -> IdentityUpdate:
    client = lead.client
    return IdentityUpdate(
        client_uniq_id=client.uniq_id,
        client_ids=lead.client_ids,
        phones=client.phones,
        emails=client.emails,
        name=client.name,
        consent=lead.consent,
        consent_at=lead.occurred_at,
    )


def contact_record(identity: Identity, hash_identifiers: bool) -> ContactRecord:
    phones = identity.phones if identity.consent else ()
    emails = identity.emails if identity.consent else ()
    if hash_identifiers:
        return ContactRecord(
            uniq_id=identity.client_uniq_id,
            name=identity.name,
            client_ids=identity.client_ids,
            phones_md5=tuple(normalize.md5_hex(p) for p in phones),
            emails_md5=tuple(normalize.md5_hex(e) for e in emails),
        )
    return ContactRecord(
        uniq_id=identity.client_uniq_id,
        name=identity.name,
        client_ids=identity.client_ids,
        phones=phones,
        emails=emails,
    )


def contact(
    identity: Identity, hash_identifiers: bool, zone: ZoneInfo
) -> tuple[dict[str, Any], bytes, str]:
    """The contact record as Metrica gets it, its JSON (as it goes into the upload), and its
    fingerprint."""
    rendered = contact_record(identity, hash_identifiers).render(zone)
    encoded = encode(rendered)
    return rendered, encoded, fingerprint(encoded)


def fingerprint(encoded: bytes) -> str:
    """Stable digest of what Metrica would hold for the contact (not personal data itself): of
    its JSON, whose key order the renderer fixes and whose lists are sorted."""
    return hashlib.sha256(encoded).hexdigest()[:32]
