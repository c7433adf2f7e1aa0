"""Looking at a running service from outside: its store's ledger and its Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from metrica_bridge.store import open_store


def outcomes(store_url: str, event_ids: Iterable[str]) -> dict[str, str]:
    """event id -> recorded outcome, for the ids the ledger has (any backend)."""
    store = open_store(store_url, migrate=False)
    try:
        return {k: v.outcome for k, v in store.outcomes(event_ids).items()}
    except Exception:
        return {}  # the service may not have created the schema yet
    finally:
        store.close()


def parked_count(store_url: str) -> int:
    store = open_store(store_url, migrate=False)
    try:
        return store.parked_count()
    except Exception:
        return -1
    finally:
        store.close()


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
