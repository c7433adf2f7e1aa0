"""The Metrica CDP side: client, outcome classes, quota governor, records, status map."""

from metrica_bridge.metrica.classify import Outcome, Success, UploadResult, classify
from metrica_bridge.metrica.client import MergeMode, MetricaClient
from metrica_bridge.metrica.errors import (
    ApiError,
    BudgetExhausted,
    MetricaError,
    PermanentError,
    RetryExhausted,
    SetupError,
    ThrottledError,
    TransientError,
    UnclearOutcome,
)
from metrica_bridge.metrica.quota import (
    BudgetBackend,
    InMemoryBudget,
    QuotaGovernor,
    shared_governor,
)
from metrica_bridge.metrica.records import ContactRecord, Goal, OrderRecord
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.metrica.status_map import (
    MetricaStatus,
    StatusMap,
    StatusMapError,
    default_status_map,
    load_status_map,
)

__all__ = [
    "ApiError",
    "BudgetBackend",
    "BudgetExhausted",
    "ContactRecord",
    "Goal",
    "InMemoryBudget",
    "MergeMode",
    "MetricaClient",
    "MetricaError",
    "MetricaStatus",
    "OrderRecord",
    "Outcome",
    "PermanentError",
    "QuotaGovernor",
    "RetryExhausted",
    "RetryPolicy",
    "SetupError",
    "StatusMap",
    "StatusMapError",
    "Success",
    "ThrottledError",
    "TransientError",
    "UnclearOutcome",
    "UploadResult",
    "classify",
    "default_status_map",
    "load_status_map",
    "shared_governor",
]
