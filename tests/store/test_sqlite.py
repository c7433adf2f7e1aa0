"""SQLite specifics: key lists travel as one JSON array when SQLite has its JSON functions, as
a placeholder per key (in chunks) when it has not; both read the same rows."""

from __future__ import annotations

from pathlib import Path

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store import Changes, IdentityUpdate, LedgerEntry
from metrica_bridge.store.sqlite import SqliteStore


def test_json_keys_and_placeholders_read_the_same(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        store.migrate()
        ids = [f"e{n:04d}" for n in range(1_200)]  # more than one placeholder chunk
        store.apply(Changes(ledger=[LedgerEntry(i, "t", Outcome.DELIVERED) for i in ids[::2]]))
        store.merge_identities(
            [IdentityUpdate(f"c{n}", client_ids=(str(n + 1),)) for n in range(700)]
        )
        assert store._json_each  # this build has JSON1: the fast path is the one in use
        fast = (store.outcomes(ids), store.identities(f"c{n}" for n in range(1_000)))
        store._json_each = False
        slow = (store.outcomes(ids), store.identities(f"c{n}" for n in range(1_000)))
        assert fast == slow
        assert len(fast[0]) == 600
        assert len(fast[1]) == 700
        claimed = store.claim_orders([f"d{n}" for n in range(600)], "me", 30)
        assert len(claimed) == 600
        assert store.claim_orders(["d1", "d700"], "other", 30) == {"d700"}
    finally:
        store.close()
