"""Scraping the service's ``METRICS_PORT`` the way Prometheus does, for the ops tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PREFIX = "metrica_bridge_"


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:<port><path>``; (0, error) when nothing answers."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__
    return response.status_code, response.text


@dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` answer, parsed by Prometheus' own text parser."""

    text: str
    samples: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = tuple(s for f in text_string_to_metric_families(text) for s in f.samples)
        return cls(text, samples)

    def series(self, name: str, **labels: str) -> list[Sample]:
        """Samples of ``metrica_bridge_<name>`` whose labels include ``labels``."""
        full = PREFIX + name
        return [
            s
            for s in self.samples
            if s.name == full and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum over matching series (0 when there is none, as Prometheus' ``sum`` of a
        counter never incremented would be, were it exported)."""
        return sum(s.value for s in self.series(name, **labels))

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.series(name, **labels):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out


def scrape(port: int) -> Scrape | None:
    status, body = get(port, "/metrics")
    return Scrape.parse(body) if status == 200 else None
