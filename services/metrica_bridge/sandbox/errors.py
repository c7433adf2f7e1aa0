"""Metrica's error body (metrica-api.md §11) and the exception that carries it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# error_type → HTTP status, as the reference table lists them.
STATUS_OF: dict[str, int] = {
    "invalid_parameter": 400,
    "missing_parameter": 400,
    "invalid_uploading": 400,
    "invalid_json": 400,
    "limit_exceeded": 400,
    "query_error": 400,
    "too_much_rows": 400,
    "unauthorized": 401,
    "access_denied": 403,
    "invalid_token": 403,
    "not_found": 404,
    "not_acceptable": 406,
    "conflict": 409,
    "quota_requests_by_uid": 429,
    "quota_requests_by_ip": 429,
    "quota_parallel_requests": 429,
    "quota_requests_by_counter_id": 429,
    "quota_delegate_requests": 429,
    "quota_grants_requests": 429,
    "backend_error": 503,
    "timeout": 504,
}
QUOTA_ERROR_TYPES = frozenset(t for t, s in STATUS_OF.items() if s == 429)


@dataclass(frozen=True, slots=True)
class ErrorItem:
    error_type: str
    message: str
    location: str | None = None

    def as_json(self, location: bool = True) -> dict[str, Any]:
        item: dict[str, Any] = {"error_type": self.error_type, "message": self.message}
        if location:
            item["location"] = self.location
        return item


class ApiError(Exception):
    """An answer other than 2xx. The message never holds the token or a personal value."""

    def __init__(self, status: int, errors: list[ErrorItem]) -> None:
        super().__init__(errors[0].message if errors else str(status))
        self.status = status
        self.errors = errors

    @classmethod
    def of(cls, error_type: str, message: str, location: str | None = None) -> ApiError:
        return cls(STATUS_OF[error_type], [ErrorItem(error_type, message, location)])

    def body(self, locations: bool = True) -> dict[str, Any]:
        return error_body(self.status, self.errors, locations)


def error_body(status: int, errors: list[ErrorItem], locations: bool = True) -> dict[str, Any]:
    """The §11 body; ``locations=False`` leaves ``location`` out of every item."""
    return {
        "errors": [e.as_json(locations) for e in errors],
        "code": status,
        "message": errors[0].message if errors else "error",
    }


def server_error(status: int, message: str) -> ApiError:
    """An injected 5xx: 504 is Metrica's ``timeout``, every other 5xx its ``backend_error``."""
    error_type = "timeout" if status == 504 else "backend_error"
    return ApiError(status, [ErrorItem(error_type, message, None)])
