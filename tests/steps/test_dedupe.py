"""The dedupe step alone, on a real SQLite store: what is remembered, what must be asked."""

from __future__ import annotations

from pathlib import Path

from metrica_bridge.outcomes import Outcome
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.store import Changes, open_store
from metrica_bridge.store.base import LedgerEntry


def _entry(event_id: str, outcome: Outcome = Outcome.DELIVERED) -> LedgerEntry:
    return LedgerEntry(event_id, "topic", outcome, "", None)


def test_remembered_outcomes_need_no_query_and_the_rest_are_asked(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.apply(Changes(ledger=[_entry("stored", Outcome.STALE)]))
    dedupe = Dedupe(store)
    dedupe.remember([_entry("recent")])
    found, missing = dedupe.known(["recent", "stored", "new"])
    assert found == {"recent": Outcome.DELIVERED}
    assert missing == ["stored", "new"]
    assert dedupe.recorded(missing) == {"stored": Outcome.STALE}
    assert dedupe.recorded([]) == {}
    store.close()


def test_memory_is_bounded_and_forgets_the_oldest(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    dedupe = Dedupe(store, remember=2)
    dedupe.remember([_entry("a"), _entry("b")])
    dedupe.remember([_entry("a", Outcome.DEAD_LETTERED)])  # seen again: the newest now
    dedupe.remember([_entry("c")])
    found, missing = dedupe.known(["a", "b", "c"])
    assert found == {"a": Outcome.DEAD_LETTERED, "c": Outcome.DELIVERED}
    assert missing == ["b"]
    store.close()
