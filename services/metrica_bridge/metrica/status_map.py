"""The CRM → Metrica order status map (DESIGN.md §3, metrica-api.md §7).

Without a file the built-in default applies: the four Metrica types are their own statuses
(CRM codes ``IN_PROGRESS``, ``PAID``, ``CANCELLED``, ``SPAM``, matched case-insensitively),
orders start ``IN_PROGRESS`` and payments set ``PAID``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STATUS_TYPES = ("IN_PROGRESS", "PAID", "CANCELLED", "SPAM", "OTHER")
_STATUS_ID = re.compile(r"^[\w\-:]+$")
_MAX_GOALS = 10
_MAX_HUMANIZED = 4096


class StatusMapError(ValueError):
    """An invalid status map; the message names the offending key."""


@dataclass(frozen=True)
class MetricaStatus:
    id: str
    type: str
    humanized: str | None = None
    goals: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.humanized is not None:
            out["humanized"] = self.humanized
        # Always an array (the docs' sample shows a bare string; the schema says array).
        out["goal_action_ids"] = list(self.goals)
        return out


@dataclass(frozen=True)
class StatusMap:
    statuses: Mapping[str, MetricaStatus]
    initial_status: str
    paid_status: str
    source: str = "built-in default"
    case_insensitive: bool = field(default=False, compare=False)

    def translate(self, crm_status: str) -> MetricaStatus | None:
        """The Metrica status of a CRM status code; None when unmapped (skip, count)."""
        key = crm_status.upper() if self.case_insensitive else crm_status
        return self.statuses.get(key)

    @property
    def initial(self) -> MetricaStatus:
        return self.statuses[self.initial_status]

    @property
    def paid(self) -> MetricaStatus:
        return self.statuses[self.paid_status]

    def metrica_statuses(self) -> list[MetricaStatus]:
        """Each Metrica status once, in map order."""
        return list({s.id: s for s in self.statuses.values()}.values())

    def to_order_statuses(self) -> list[dict[str, Any]]:
        """The body items of ``POST /schema/order_statuses``."""
        return [s.to_api() for s in self.metrica_statuses()]


def default_status_map() -> StatusMap:
    statuses = {
        t: MetricaStatus(id=t, type=t, humanized=h)
        for t, h in (
            ("IN_PROGRESS", "В работе"),
            ("PAID", "Оплачен"),
            ("CANCELLED", "Отменён"),
            ("SPAM", "Спам"),
        )
    }
    return StatusMap(
        statuses=statuses, initial_status="IN_PROGRESS", paid_status="PAID", case_insensitive=True
    )


def _status(code: str, raw: Any) -> MetricaStatus:
    where = f"statuses.{code}"
    if not isinstance(raw, Mapping):
        raise StatusMapError(f"{where}: must be a mapping with id and type")
    unknown = set(raw) - {"id", "type", "humanized", "goals"}
    if unknown:
        raise StatusMapError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    status_id = raw.get("id")
    if not isinstance(status_id, str | int) or isinstance(status_id, bool):
        raise StatusMapError(f"{where}.id: required, a string")
    status_id = str(status_id)
    if not 1 <= len(status_id) <= 255:
        raise StatusMapError(f"{where}.id: must be 1-255 characters")
    if not _STATUS_ID.match(status_id):
        raise StatusMapError(f"{where}.id: {status_id!r} must match ^[\\w-:]+$")
    status_type = raw.get("type")
    if status_type not in STATUS_TYPES:
        raise StatusMapError(
            f"{where}.type: {status_type!r} is not one of {', '.join(STATUS_TYPES)}"
        )
    humanized = raw.get("humanized")
    if humanized is not None:
        if not isinstance(humanized, str):
            raise StatusMapError(f"{where}.humanized: must be a string")
        if len(humanized) > _MAX_HUMANIZED:
            raise StatusMapError(f"{where}.humanized: longer than {_MAX_HUMANIZED} characters")
    goals_raw = raw.get("goals") or []
    if isinstance(goals_raw, str):
        goals_raw = [goals_raw]
    if not isinstance(goals_raw, list):
        raise StatusMapError(f"{where}.goals: must be a list of JS goal ids")
    goals = [str(g) for g in goals_raw]
    if any(not g for g in goals):
        raise StatusMapError(f"{where}.goals: goal ids must be non-empty")
    if len(set(goals)) != len(goals):
        raise StatusMapError(f"{where}.goals: goal ids must be unique")
    if len(goals) > _MAX_GOALS:
        raise StatusMapError(f"{where}.goals: at most {_MAX_GOALS} goals, got {len(goals)}")
    return MetricaStatus(id=status_id, type=status_type, humanized=humanized, goals=tuple(goals))


def parse_status_map(data: Any, source: str = "<memory>") -> StatusMap:
    if not isinstance(data, Mapping):
        raise StatusMapError(
            "the status map must be a mapping with initial_status, paid_status, statuses"
        )
    unknown = set(data) - {"initial_status", "paid_status", "statuses"}
    if unknown:
        raise StatusMapError(f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    raw_statuses = data.get("statuses")
    if not isinstance(raw_statuses, Mapping) or not raw_statuses:
        raise StatusMapError(
            "statuses: required, a non-empty mapping of CRM status → Metrica status"
        )
    statuses = {str(code): _status(str(code), raw) for code, raw in raw_statuses.items()}
    by_id: dict[str, tuple[str, MetricaStatus]] = {}
    for code, status in statuses.items():
        seen = by_id.setdefault(status.id, (code, status))
        if seen[1] != status:
            raise StatusMapError(
                f"statuses.{code}: Metrica status id {status.id!r} is also defined differently "
                f"by statuses.{seen[0]}"
            )
    for key in ("initial_status", "paid_status"):
        value = data.get(key)
        if value is None:
            raise StatusMapError(f"{key}: required")
        if str(value) not in statuses:
            raise StatusMapError(f"{key}: {value!r} is not a key of statuses")
    return StatusMap(
        statuses=statuses,
        initial_status=str(data["initial_status"]),
        paid_status=str(data["paid_status"]),
        source=source,
    )


def load_status_map(path: Path | None) -> StatusMap:
    """The map in ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return default_status_map()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StatusMapError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StatusMapError(f"{path}: not valid YAML{where}") from None
    try:
        return parse_status_map(data, source=str(path))
    except StatusMapError as exc:
        raise StatusMapError(f"{path}: {exc}") from None
