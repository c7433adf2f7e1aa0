from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metrica_bridge.store import Changes, IdentityUpdate, Store
from tests.store.builders import run_together
from tests.store.conftest import StoreFactory


def test_merge_is_a_set_union_with_latest_name_and_consent(store: Store) -> None:
    first = store.merge_identities(
        [
            IdentityUpdate(
                "c1",
                client_ids=("222", "111"),
                phones=("79990000001",),
                name="Ann",
                consent=True,
            )
        ]
    )
    created = first["c1"]
    assert created.client_ids == ("111", "222")
    assert created.consent is True
    assert created.created_at is not None
    assert created.created_at.utcoffset() == timedelta(0)

    merged = store.merge_identities(
        [
            IdentityUpdate("c1", client_ids=("333", "111"), emails=("a@example.com",)),
            IdentityUpdate("c1", phones=("79990000002", "79990000001"), consent=False),
            IdentityUpdate("c2", emails=("b@example.com",)),
        ]
    )
    c1 = merged["c1"]
    assert c1.client_ids == ("111", "222", "333")
    assert c1.phones == ("79990000001", "79990000002")
    assert c1.emails == ("a@example.com",)
    assert c1.name == "Ann"  # None leaves it
    assert c1.consent is False  # the latest stated consent
    assert c1.created_at == created.created_at
    assert merged["c2"].consent is True  # never stated: the contract's default
    assert store.identities(["c1", "c2", "nobody"]) == merged

    again = store.merge_identities([IdentityUpdate("c1", name="Anna", consent=True)])
    assert again["c1"].name == "Anna"
    assert again["c1"].consent is True
    assert again["c1"].client_ids == ("111", "222", "333")
    # a lead repeating what is known changes nothing
    assert store.merge_identities([IdentityUpdate("c1", client_ids=("111",))]) == again
    assert store.identities(["c1"]) == again


def test_consent_is_the_most_recent_leads_however_late_an_older_one_is_handled(
    store: Store,
) -> None:
    t0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    newer = IdentityUpdate("c1", phones=("79990000001",), consent=True, consent_at=t0)
    older = IdentityUpdate("c1", consent=False, consent_at=t0 - timedelta(hours=1))
    store.merge_identities([newer])
    # An older lead handled late (released from the park, replayed): its "no" is history.
    late = store.merge_identities([older])["c1"]
    assert late.consent is True
    assert late.consent_at == t0
    assert late.has_identifier()
    assert store.identities(["c1"])["c1"] == late
    # In one batch, in either order: the newer statement holds.
    for batch in ([older, newer], [newer, older]):
        cid = f"c-{len(batch)}-{batch[0] is older}"
        got = store.merge_identities(
            [
                IdentityUpdate(cid, phones=u.phones, consent=u.consent, consent_at=u.consent_at)
                for u in batch
            ]
        )[cid]
        assert (got.consent, got.consent_at) == (True, t0)
    # A newer "no" does win, and one without a time counts as the latest handled.
    withdrawn = store.merge_identities(
        [IdentityUpdate("c1", consent=False, consent_at=t0 + timedelta(minutes=1))]
    )["c1"]
    assert withdrawn.consent is False
    assert not withdrawn.has_identifier()
    untimed = store.merge_identities([IdentityUpdate("c1", consent=True)])["c1"]
    assert untimed.consent is True


def test_has_identifier_follows_consent(store: Store) -> None:
    found = store.merge_identities(
        [
            IdentityUpdate("phone-no-consent", phones=("79990000001",), consent=False),
            IdentityUpdate("phone", phones=("79990000001",)),
            IdentityUpdate("cid-no-consent", client_ids=("1",), consent=False),
            IdentityUpdate("nothing"),
        ]
    )
    assert {cid for cid, ident in found.items() if ident.has_identifier()} == {
        "phone",
        "cid-no-consent",
    }


def test_contact_upload_marks_keep_the_identifiers(store: Store) -> None:
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",), name="Ann")])
    store.apply(Changes(contacts_uploaded={"c1": "fp-1", "c-unknown": "fp-2"}))
    found = store.identities(["c1", "c-unknown"])
    assert found["c1"].uploaded_fingerprint == "fp-1"
    assert found["c1"].client_ids == ("1",)
    assert found["c1"].name == "Ann"
    assert found["c-unknown"].uploaded_fingerprint == "fp-2"
    merged = store.merge_identities([IdentityUpdate("c1", client_ids=("2",))])
    assert merged["c1"].uploaded_fingerprint == "fp-1"  # merging does not forget the upload


def test_concurrent_merges_lose_no_identifier(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]

    def run(i: int) -> None:
        for j in range(20):
            stores[i].merge_identities(
                [IdentityUpdate(f"c{k}", client_ids=(f"{i}-{j}",)) for k in range(5)]
            )

    run_together(len(stores), run)
    expected = tuple(sorted(f"{i}-{j}" for i in range(4) for j in range(20)))
    found = stores[0].identities([f"c{k}" for k in range(5)])
    assert {cid: ident.client_ids for cid, ident in found.items()} == {
        f"c{k}": expected for k in range(5)
    }
