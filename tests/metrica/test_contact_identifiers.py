"""Issue 15, item 7: when a contact's phones and emails must go (consent withdrawn, or hashing
switched on after raw values were sent), Metrica stops holding them. Under merge_mode=UPDATE a
field left out keeps its old value, so the contact states every personal list, empty ones too."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps import enrich
from metrica_bridge.store.base import Identity
from tests.metrica.conftest import COUNTER, ClientFactory

ZONE = ZoneInfo("Europe/Moscow")
RAW = Identity(
    "client-7",
    client_ids=("1712345678901234567",),
    phones=("79995551111",),
    emails=("anna@example.com",),
    consent=True,
)


async def _upload(make_client: ClientFactory, identity: Identity, hashed: bool) -> None:
    rendered, _, _ = enrich.contact(identity, hashed, ZONE)
    async with make_client() as client:
        await client.upload_contacts([rendered])


async def test_withdrawn_consent_removes_the_phones_and_emails_metrica_holds(
    make_client: ClientFactory, sandbox: SandboxServer
) -> None:
    await _upload(make_client, RAW, hashed=False)
    [held] = sandbox.contacts(COUNTER)
    assert (held["phones"], held["emails"]) == (["79995551111"], ["anna@example.com"])
    withdrawn = Identity(RAW.client_uniq_id, RAW.client_ids, RAW.phones, RAW.emails, None, False)
    await _upload(make_client, withdrawn, hashed=False)
    [held] = sandbox.contacts(COUNTER)
    assert not held.get("phones")
    assert not held.get("emails")
    assert not held.get("phones_md5")
    assert not held.get("emails_md5")
    assert held["client_ids"] == ["1712345678901234567"]  # the binding itself stays


async def test_hashing_switched_on_replaces_the_raw_values_with_their_md5(
    make_client: ClientFactory, sandbox: SandboxServer
) -> None:
    await _upload(make_client, RAW, hashed=False)
    await _upload(make_client, RAW, hashed=True)
    [held] = sandbox.contacts(COUNTER)
    assert not held.get("phones")
    assert not held.get("emails")
    assert len(held["phones_md5"]) == len(held["emails_md5"]) == 1
    # And back: raw again removes the hashes (one mechanism both ways).
    await _upload(make_client, RAW, hashed=False)
    [held] = sandbox.contacts(COUNTER)
    assert held["phones"] == ["79995551111"]
    assert not held.get("phones_md5")
    assert not held.get("emails_md5")
