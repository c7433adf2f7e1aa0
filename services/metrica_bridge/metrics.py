"""Prometheus metrics: one registry of typed names, so dashboards and alerts have one source.

Conventions: ``metrica_bridge_`` prefix, ``_total`` for counters, ``_seconds`` for durations,
labels with a small closed set of values (topic, outcome, class, endpoint) — never an id.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "metrica_bridge_"


class ResultClass(StrEnum):
    """How one Metrica request ended (DESIGN.md §5): the ``result`` label of
    ``metrica_requests_total``. Event outcomes and DLQ error classes are in
    :mod:`metrica_bridge.outcomes`."""

    SUCCESS = "success"
    TRANSIENT = "transient"
    THROTTLED = "throttled"
    SETUP = "setup"
    PERMANENT = "permanent"


EVENTS_CONSUMED = Counter(
    PREFIX + "events_consumed_total", "Kafka records consumed.", ["topic"], registry=REGISTRY
)
EVENTS_PROCESSED = Counter(
    PREFIX + "events_processed_total",
    "Events by final recorded outcome.",
    ["topic", "outcome"],
    registry=REGISTRY,
)
EVENTS_RELEASED = Counter(
    PREFIX + "events_released_total",
    "Parked events released once their client's identity arrived.",
    ["topic"],
    registry=REGISTRY,
)
DLQ_RECORDS = Counter(
    PREFIX + "dlq_records_total",
    "Records produced to a dead-letter topic.",
    ["topic", "error_class"],
    registry=REGISTRY,
)
OLDEST_UNFINISHED = Gauge(
    PREFIX + "oldest_unfinished_age_seconds",
    "Age of the oldest consumed event of the partition that is not handled yet (0: none); its"
    " partition commits nothing past it.",
    ["topic", "partition"],
    registry=REGISTRY,
)
CONTACTS_RESENT = Counter(
    PREFIX + "contacts_resent_total",
    "Contacts sent again because the client's identity grew while the upload was on its way"
    " (another process uploaded the same client meanwhile).",
    registry=REGISTRY,
)
DLQ_FAILURES = Counter(
    PREFIX + "dlq_failures_total",
    "Failed attempts to produce a dead letter (retried; the source partition commits nothing"
    " past it until one succeeds).",
    ["topic"],
    registry=REGISTRY,
)
METRICA_REQUESTS = Counter(
    PREFIX + "metrica_requests_total",
    "Requests to the Metrica API by endpoint and result class.",
    ["endpoint", "result"],
    registry=REGISTRY,
)
METRICA_REQUEST_DURATION = Histogram(
    PREFIX + "metrica_request_duration_seconds",
    "Duration of Metrica API requests.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
UPLOAD_RECORDS = Histogram(
    PREFIX + "upload_records",
    "Records carried by one accepted upload.",
    ["endpoint"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
QUOTA_REMAINING = Gauge(
    PREFIX + "metrica_daily_quota_remaining",
    "Requests left in this quota day's budget (shared by every process on the store).",
    registry=REGISTRY,
)
DAILY_BUDGET = Gauge(
    PREFIX + "metrica_daily_budget",
    "The daily request budget (METRICA_DAILY_BUDGET), for alert expressions.",
    registry=REGISTRY,
)
QUOTA_PACE = Gauge(
    PREFIX + "metrica_pace_requests_per_second",
    "Requests per second the pace allows now: what is left of the budget, less the reserve,"
    " spread evenly over the time to the reset.",
    registry=REGISTRY,
)
QUOTA_RESET = Gauge(
    PREFIX + "metrica_quota_reset_seconds",
    "Seconds until the quota day resets (00:00 GMT with the default METRICA_QUOTA_DAY_S).",
    registry=REGISTRY,
)
QUOTA_PROJECTED = Gauge(
    PREFIX + "metrica_requests_projected",
    "Requests this quota day will have used by the reset at the rate of the last minutes.",
    registry=REGISTRY,
)
QUOTA_WAITING = Gauge(
    PREFIX + "metrica_quota_waiting",
    "1 while sending waits for the next quota day: the budget is spent (ours, or Metrica"
    " answered 429 quota_requests_by_uid / quota_requests_by_counter_id).",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    PREFIX + "consumer_lag",
    "Consumer lag per partition, from librdkafka statistics.",
    ["topic", "partition"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    PREFIX + "in_flight_events",
    "Events consumed but not yet handled.",
    ["topic"],
    registry=REGISTRY,
)
PARKED = Gauge(PREFIX + "parked_events", "Events waiting for a client identity.", registry=REGISTRY)
END_TO_END_LATENCY = Histogram(
    PREFIX + "end_to_end_latency_seconds",
    "From the event's occurred_at to Metrica's acknowledgement.",
    ["topic"],
    # Fine steps around the default linger (2 s) so "p99 <= linger + 1 s" can be read off.
    buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
LAST_SUCCESSFUL_UPLOAD = Gauge(
    PREFIX + "last_successful_upload_timestamp_seconds",
    "Unix time of the last upload Metrica accepted (freshness heartbeat).",
    registry=REGISTRY,
)
ORDERS_OUTSIDE_WINDOW = Counter(
    PREFIX + "orders_outside_binding_window_total",
    "Orders sent outside Metrica's binding windows (21 days to create, 111 to update).",
    ["window"],
    registry=REGISTRY,
)
ORDER_RULES = Counter(
    PREFIX + "order_rules_total",
    "Orders decided by a documented rule rather than by CRM data: created_at_from_payment (the"
    " deal's creation time never came), currency_ignored (a status named another currency"
    " without an amount in it).",
    ["rule"],
    registry=REGISTRY,
)
SETUP_ERROR = Gauge(
    PREFIX + "setup_error",
    "1 while sending is stopped for a setup problem: Metrica refuses the token or counter"
    " (401/403/404), or refuses every part of an upload the same way.",
    registry=REGISTRY,
)
PARTITIONS_ASSIGNED = Gauge(
    PREFIX + "assigned_partitions",
    "Partitions assigned to this process.",
    ["topic"],
    registry=REGISTRY,
)
IDENTIFIERS_DROPPED = Counter(
    PREFIX + "identifiers_dropped_total",
    "Phones, emails or ClientIDs that could not be normalised and were dropped.",
    ["topic"],
    registry=REGISTRY,
)
