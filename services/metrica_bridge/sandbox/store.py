"""The sandbox's data: contacts, orders with their history, order statuses and uploads.

All state lives in memory and is only touched from the server's event loop, so no locks.
When a :class:`~.persist.SqliteState` is attached, every change is written through to it in
the same call and loaded back on start (``--state PATH``).

Semantics follow metrica-api.md: merge modes (§4), contacts before orders (§1), mapped order
statuses (§7), creation dates that never change (§4, §6), products of the counter's product list
(§8) and per-order goals that are JavaScript-event goals of the counter (§7). A bad row rejects
the whole upload: nothing is applied, and the errors name every bad row (answered 400, or 200
with ``api_validation_status: FAILED`` under the ``invalid_as_200`` fault, §9).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from metrica_bridge.sandbox.errors import ApiError, ErrorItem
from metrica_bridge.sandbox.persist import SqliteState
from metrica_bridge.sandbox.validation import (
    DEFAULT_MAX_ROWS,
    MULTI_VALUED,
    STATUS_TYPES,
    js_goal_ids,
    merge_mode,
    parse_json,
    validate_contacts,
    validate_goal,
    validate_order_statuses,
    validate_orders,
    validate_products,
)

# A detailed order may carry a status type's own name (example B sends IN_PROGRESS) without
# a mapping: those act as statuses of that type.
PREDEFINED_STATUSES = frozenset(STATUS_TYPES - {"OTHER"})
_ROW_INDEX = re.compile(r"\[(\d+)\]")


def iso_utc(moment: datetime, fraction: bool = True) -> str:
    text = moment.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%f" if fraction else "%Y-%m-%dT%H:%M:%S"
    )
    return text + "Z"


def _full_date_time(value: str) -> str:
    return value if len(value) > 10 else value + " 00:00:00"


@dataclass(slots=True)
class Upload:
    uploading_id: str
    counter_id: int
    endpoint: str  # "contacts" | "orders"
    merge_mode: str | None
    # "accepted"; "rejected" (answered 400); "failed" (answered 200 with FAILED, listed)
    status: str
    elements_count: int
    received_at: datetime
    errors: list[ErrorItem] = field(default_factory=list)
    http_status: int = 200

    def uploading(self) -> dict[str, Any]:
        """The ``uploading`` object of an answer and of ``last_uploadings`` (§9). A failed one
        carries ``api_validation_errors`` (strings, as the newer getLastUploadings schema lists
        them): the messages only, naming no rows."""
        out: dict[str, Any] = {
            "uploading_id": self.uploading_id,
            "datetime": iso_utc(self.received_at, fraction=False),
            "api_validation_status": "PASSED" if self.status == "accepted" else "FAILED",
            "elements_count": self.elements_count,
            "entity_type": "SYSTEM",
            "uploading_format": "JSON",
            "uploading_source": "API",
        }
        if self.status != "accepted":
            out["api_validation_errors"] = list(dict.fromkeys(e.message for e in self.errors))
        return out

    def inspection(self) -> dict[str, Any]:
        return {
            "uploading_id": self.uploading_id,
            "endpoint": self.endpoint,
            "merge_mode": self.merge_mode,
            "status": self.status,
            "http_status": self.http_status,
            "elements_count": self.elements_count,
            "received_at": iso_utc(self.received_at),
            "errors": [e.as_json() for e in self.errors],
        }

    def as_record(self) -> dict[str, Any]:
        return {**self.inspection(), "counter_id": self.counter_id}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Upload:
        return cls(
            uploading_id=record["uploading_id"],
            counter_id=record["counter_id"],
            endpoint=record["endpoint"],
            merge_mode=record["merge_mode"],
            status=record["status"],
            elements_count=record["elements_count"],
            received_at=datetime.fromisoformat(record["received_at"]),
            errors=[ErrorItem(**e) for e in record["errors"]],
            http_status=record["http_status"],
        )


@dataclass(slots=True)
class Order:
    record: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    # finish_date_time defaults to the first upload with a PAID-type status (§6).
    first_paid_at: str | None = None

    def current(self) -> dict[str, Any]:
        state = dict(self.record)
        if state.get("finish_date_time") is None and self.first_paid_at is not None:
            state["finish_date_time"] = self.first_paid_at
        return state


@dataclass(slots=True)
class Counter:
    counter_id: int
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    # The product list (POST /schema/products, §8); None: the counter has none, so order
    # products are not checked (see docs/decisions.md).
    products: dict[str, dict[str, Any]] | None = None
    goals: dict[int, dict[str, Any]] = field(default_factory=dict)  # management goals, by id
    goal_action_ids: set[str] = field(default_factory=set)  # what per-order goals may name

    def status_type(self, status_id: str) -> str | None:
        mapped = self.statuses.get(status_id)
        if mapped is not None:
            return str(mapped["type"])
        return status_id if status_id in PREDEFINED_STATUSES else None


def merge(stored: dict[str, Any] | None, sent: dict[str, Any], mode: str) -> dict[str, Any]:
    """One record after an upload (§4): SAVE replaces, UPDATE sets the fields sent, APPEND adds
    to multi-valued fields (and sets single-valued ones like UPDATE). ``None`` means null."""
    if stored is None or mode == "SAVE":
        merged = {k: v for k, v in sent.items() if v is not None}
    else:
        merged = dict(stored)
        for key, value in sent.items():
            if value is None:
                merged.pop(key, None)
            elif mode == "APPEND" and key in MULTI_VALUED and key in merged:
                old = merged[key]
                if isinstance(old, dict):
                    merged[key] = {**old, **value}
                else:
                    merged[key] = old + [v for v in value if v not in old]
            else:
                merged[key] = value
    if stored is not None and stored.get("create_date_time") is not None:
        # Creation dates never change (§4); orders refuse a different one before merging.
        merged["create_date_time"] = stored["create_date_time"]
    return merged


def _by_row(errors: Iterable[ErrorItem]) -> list[ErrorItem]:
    def key(item: ErrorItem) -> int:
        found = _ROW_INDEX.search(item.location or "")
        return int(found.group(1)) if found else -1

    return sorted(errors, key=key)


class Store:
    def __init__(
        self,
        counter_ids: Iterable[int],
        timezone: str = "Europe/Moscow",
        persist: SqliteState | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        products: Iterable[str] | None = None,
        goals: Iterable[str] = (),
    ) -> None:
        """``products``: a product list every counter starts with (None: none, products are
        not checked until one is posted); ``goals``: JavaScript-event goal identifiers every
        counter starts with. Both come back after a reset."""
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self._now = now
        self._persist = persist
        self._seed_products = None if products is None else tuple(products)
        self._seed_goals = tuple(goals)
        self._last_goal_id = 0
        self._counters = {int(c): self._new_counter(int(c)) for c in counter_ids}
        self._last_id = 0
        if persist is not None:
            self._load(persist)

    def _new_counter(self, counter_id: int) -> Counter:
        c = Counter(counter_id)
        if self._seed_products is not None:
            c.products = {name: {"name": name, "humanized": None} for name in self._seed_products}
        for goal_id in self._seed_goals:
            self._add_goal(c, {"name": goal_id, "type": "action",
                               "conditions": [{"type": "exact", "url": goal_id}]})  # fmt: skip
        return c

    def _add_goal(self, c: Counter, goal: dict[str, Any], goal_id: int | None = None) -> int:
        if goal_id is None:
            self._last_goal_id += 1
            goal_id = self._last_goal_id
        self._last_goal_id = max(self._last_goal_id, goal_id)
        c.goals[goal_id] = {"id": goal_id, **goal, "goal_source": "user", "status": "Active"}
        c.goal_action_ids |= js_goal_ids(goal)
        return goal_id

    # -- lifecycle -------------------------------------------------------------------------

    def _load(self, persist: SqliteState) -> None:
        self._last_id = persist.last_uploading_id()
        for cid, uniq_id, doc in persist.contacts():
            if cid in self._counters:
                self._counters[cid].contacts[uniq_id] = doc
        for cid, order_id, doc, first_paid_at in persist.orders():
            if cid in self._counters:
                self._counters[cid].orders[order_id] = Order(doc, [], first_paid_at)
        for cid, order_id, entry in persist.history():
            order = self._counters[cid].orders.get(order_id) if cid in self._counters else None
            if order is not None:
                order.history.append(entry)
        for cid, _status_id, doc in persist.statuses():
            if cid in self._counters:
                self._counters[cid].statuses[doc["id"]] = doc
        for cid, kind, key, doc in persist.catalog():
            c = self._counters.get(cid)
            if c is None:
                continue
            if kind == "product":
                c.products = {**(c.products or {}), key: doc}
            else:
                self._add_goal(c, {k: doc[k] for k in ("name", "type", "conditions")}, int(key))
        for record in persist.uploads():
            upload = Upload.from_record(record)
            if upload.counter_id in self._counters:
                self._counters[upload.counter_id].uploads.append(upload)

    def reset(self) -> None:
        for cid in self._counters:
            self._counters[cid] = self._new_counter(cid)
        if self._persist is not None:
            self._persist.clear(self._last_id)

    def close(self) -> None:
        if self._persist is not None:
            self._persist.close()

    # -- lookups ---------------------------------------------------------------------------

    @property
    def counter_ids(self) -> list[int]:
        return list(self._counters)

    def counter(self, counter_id: int) -> Counter:
        found = self._counters.get(counter_id)
        if found is None:
            raise ApiError.of("not_found", f"counter {counter_id} not found", "counterId")
        return found

    def time_zone_offset_minutes(self) -> int:
        offset = self._now().astimezone(self.zone).utcoffset()
        return int(offset.total_seconds() // 60) if offset is not None else 0

    def local_now(self) -> str:
        return self._now().astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def _next_id(self) -> str:
        self._last_id += 1
        return str(self._last_id)

    # -- uploads ---------------------------------------------------------------------------

    def upload(
        self,
        counter_id: int,
        endpoint: str,
        mode: str | None,
        raw: bytes,
        content_type: str | None,
        max_rows: int = DEFAULT_MAX_ROWS,
        invalid_as_200: bool = False,
    ) -> Upload:
        """``POST …/data/{endpoint}/json?merge_mode=…``: applies the whole upload or raises
        ApiError(400) having applied nothing; either way the upload is recorded. ``max_rows``
        and ``invalid_as_200`` are fault settings, hence arguments: with the latter, bad rows
        make a *failed* upload (answered 200, ``api_validation_status: FAILED``, nothing
        applied) instead of a 400; a request Metrica cannot read at all is still a 400."""
        c = self.counter(counter_id)
        try:
            checked_mode = merge_mode(mode)
            body = parse_json(raw, content_type)
        except ApiError as exc:
            raise self._reject(c, endpoint, mode, 0, exc.errors) from None
        if endpoint == "contacts":
            return self.upload_contacts(counter_id, checked_mode, body, max_rows, invalid_as_200)
        return self.upload_orders(counter_id, checked_mode, body, max_rows, invalid_as_200)

    def _reject(
        self, c: Counter, endpoint: str, mode: str | None, count: int, errors: list[ErrorItem]
    ) -> ApiError:
        upload = Upload(
            self._next_id(), c.counter_id, endpoint, mode, "rejected", count, self._now(),
            errors, 400,
        )  # fmt: skip
        c.uploads.append(upload)
        if self._persist is not None:
            self._persist.save(upload.as_record())
        return ApiError(400, errors)

    def _refuse(
        self,
        c: Counter,
        endpoint: str,
        mode: str,
        count: int,
        errors: list[ErrorItem],
        as_200: bool,
    ) -> Upload:
        """Bad rows: a failed upload (answered 200, listed in last_uploadings), or a 400."""
        if not as_200:
            raise self._reject(c, endpoint, mode, count, errors)
        upload = Upload(
            self._next_id(), c.counter_id, endpoint, mode, "failed", count, self._now(), errors
        )
        c.uploads.append(upload)
        if self._persist is not None:
            self._persist.save(upload.as_record())
        return upload

    def upload_contacts(
        self,
        counter_id: int,
        mode: str,
        body: Any,
        max_rows: int = DEFAULT_MAX_ROWS,
        invalid_as_200: bool = False,
    ) -> Upload:
        c = self.counter(counter_id)
        try:
            rows, errors = validate_contacts(body, max_rows)
        except ApiError as exc:
            raise self._reject(
                c, "contacts", mode, _row_count(body, "contacts"), exc.errors
            ) from None
        if errors:
            return self._refuse(c, "contacts", mode, len(rows), errors, invalid_as_200)
        upload = Upload(
            self._next_id(), counter_id, "contacts", mode, "accepted", len(rows), self._now()
        )
        changed: list[tuple[str, dict[str, Any]]] = []
        contacts = c.contacts
        for row in rows:
            uniq_id = row["uniq_id"]
            merged = merge(contacts.get(uniq_id), row, mode)
            contacts[uniq_id] = merged
            changed.append((uniq_id, merged))
        c.uploads.append(upload)
        if self._persist is not None:
            self._persist.save(upload.as_record(), contacts=[(counter_id, *x) for x in changed])
        return upload

    def upload_orders(
        self,
        counter_id: int,
        mode: str,
        body: Any,
        max_rows: int = DEFAULT_MAX_ROWS,
        invalid_as_200: bool = False,
    ) -> Upload:
        c = self.counter(counter_id)
        try:
            rows, errors = validate_orders(body, max_rows)
        except ApiError as exc:
            raise self._reject(c, "orders", mode, _row_count(body, "orders"), exc.errors) from None
        errors.extend(self._reference_errors(c, rows, {e.location for e in errors}))
        if errors:
            return self._refuse(c, "orders", mode, len(rows), _by_row(errors), invalid_as_200)
        upload = Upload(
            self._next_id(), counter_id, "orders", mode, "accepted", len(rows), self._now()
        )
        received_at = iso_utc(upload.received_at)
        local_now = self.local_now()
        orders = c.orders
        changed: list[tuple[int, str, dict[str, Any], str | None]] = []
        history: list[tuple[int, str, dict[str, Any]]] = []
        for row in rows:
            order_id = row["id"]
            order = orders.get(order_id)
            if order is None:
                order = orders[order_id] = Order(merge(None, row, mode))
            else:
                order.record = merge(order.record, row, mode)
            status = order.record["order_status"]
            if order.first_paid_at is None and c.status_type(status) == "PAID":
                order.first_paid_at = local_now
            # Revenue and client too, beyond DESIGN.md §7's three fields: the chaos accounting
            # checks every state an order passed through, not only its status (issue 16).
            entry = {"order_status": status, "uploading_id": upload.uploading_id,
                     "received_at": received_at, "revenue": order.record.get("revenue"),
                     "client_uniq_id": order.record.get("client_uniq_id")}  # fmt: skip
            order.history.append(entry)
            changed.append((counter_id, order_id, order.record, order.first_paid_at))
            history.append((counter_id, order_id, entry))
        c.uploads.append(upload)
        if self._persist is not None:
            self._persist.save(upload.as_record(), orders=changed, history=history)
        return upload

    def _reference_errors(
        self, c: Counter, rows: list[Any], flagged: set[str | None]
    ) -> list[ErrorItem]:
        """Checks against the counter's data, on every field that passed its own check, so a
        rejected upload lists all its problems at once."""
        errors: list[ErrorItem] = []
        contacts, orders = c.contacts, c.orders

        def usable(i: int, row: dict[str, Any], name: str) -> bool:
            return isinstance(row.get(name), str) and f"orders[{i}].{name}" not in flagged

        def clean(i: int, name: str) -> bool:  # no error anywhere inside the field
            return not any(
                loc is not None
                and loc.startswith(f"orders[{i}].{name}")
                and loc[len(f"orders[{i}].{name}") :][:1] in ("", ".", "[")
                for loc in flagged
            )

        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            if usable(i, row, "client_uniq_id") and row["client_uniq_id"] not in contacts:
                errors.append(ErrorItem(
                    "invalid_parameter",
                    "client_uniq_id names no contact of this counter: upload contacts first",
                    f"orders[{i}].client_uniq_id",
                ))  # fmt: skip
            if usable(i, row, "order_status") and c.status_type(row["order_status"]) is None:
                errors.append(ErrorItem(
                    "invalid_parameter",
                    "order_status is not mapped: map it with POST /schema/order_statuses",
                    f"orders[{i}].order_status",
                ))  # fmt: skip
            existing = orders.get(row["id"]) if usable(i, row, "id") else None
            if (
                existing is not None
                and usable(i, row, "create_date_time")
                and _full_date_time(existing.record["create_date_time"])
                != _full_date_time(row["create_date_time"])
            ):
                errors.append(ErrorItem(
                    "invalid_parameter",
                    "create_date_time of an existing order cannot change",
                    f"orders[{i}].create_date_time",
                ))  # fmt: skip
            products = row.get("products")
            if c.products is not None and isinstance(products, dict) and clean(i, "products"):
                for sku in products:
                    if sku not in c.products:
                        errors.append(ErrorItem(
                            "invalid_parameter",
                            "products names a product missing from the counter's product "
                            "list: add it with POST /schema/products",
                            f"orders[{i}].products.{sku}",
                        ))  # fmt: skip
            goals = row.get("goals")
            if isinstance(goals, list) and clean(i, "goals"):
                for j, goal in enumerate(goals):
                    if goal["goal_action_id"] not in c.goal_action_ids:
                        errors.append(ErrorItem(
                            "invalid_parameter",
                            "goal_action_id names no JavaScript-event goal of this counter: "
                            "create the goal first",
                            f"orders[{i}].goals[{j}].goal_action_id",
                        ))  # fmt: skip
        return errors

    # -- products and goals ----------------------------------------------------------------

    def set_products(self, counter_id: int, raw: bytes, content_type: str | None) -> None:
        """``POST /schema/products``: adds or replaces list items by name; none is removed."""
        c = self.counter(counter_id)
        items = validate_products(parse_json(raw, content_type))
        c.products = {**(c.products or {}), **{item["name"]: item for item in items}}
        if self._persist is not None:
            self._persist.save_catalog(
                [(counter_id, "product", item["name"], item) for item in items]
            )

    def add_goal(self, counter_id: int, raw: bytes, content_type: str | None) -> dict[str, Any]:
        """``POST /management/v1/counter/{id}/goals`` → the goal created, with its id."""
        c = self.counter(counter_id)
        goal_id = self._add_goal(c, validate_goal(parse_json(raw, content_type)))
        if self._persist is not None:
            self._persist.save_catalog([(counter_id, "goal", str(goal_id), c.goals[goal_id])])
        return c.goals[goal_id]

    def goals(self, counter_id: int) -> list[dict[str, Any]]:
        return list(self.counter(counter_id).goals.values())

    def products(self, counter_id: int) -> list[dict[str, Any]]:
        return list((self.counter(counter_id).products or {}).values())

    # -- order statuses --------------------------------------------------------------------

    def set_order_statuses(self, counter_id: int, raw: bytes, content_type: str | None) -> None:
        """Adds or replaces statuses by id; statuses not sent stay mapped."""
        c = self.counter(counter_id)
        statuses = validate_order_statuses(parse_json(raw, content_type))
        for status in statuses:
            c.statuses[status["id"]] = status
        if self._persist is not None:
            self._persist.save_statuses([(counter_id, s["id"], s) for s in statuses])

    def order_statuses(self, counter_id: int) -> list[dict[str, Any]]:
        c = self.counter(counter_id)
        return [{**s, "order_status_source": "USER"} for s in c.statuses.values()]

    # -- reads -----------------------------------------------------------------------------

    def last_uploadings(
        self, counter_id: int, before: datetime | None, limit: int
    ) -> list[dict[str, Any]]:
        """Uploads Metrica took in (accepted, or failed validation and answered 200) strictly
        before ``before`` (UTC, to the second), newest first (§9). 400s never became uploads."""
        out: list[dict[str, Any]] = []
        for upload in reversed(self.counter(counter_id).uploads):
            if upload.status == "rejected":
                continue
            if before is not None and upload.received_at.replace(microsecond=0) >= before:
                continue
            out.append(upload.uploading())
            if len(out) >= limit:
                break
        return out

    def contacts(self, counter_id: int) -> list[dict[str, Any]]:
        return list(self.counter(counter_id).contacts.values())

    def orders(self, counter_id: int) -> list[dict[str, Any]]:
        return [
            {**order.current(), "history": list(order.history)}
            for order in self.counter(counter_id).orders.values()
        ]

    def uploads(self, counter_id: int) -> list[dict[str, Any]]:
        return [u.inspection() for u in self.counter(counter_id).uploads]

    def mark_answered(self, upload: Upload, http_status: int) -> None:
        """An applied upload answered with an injected error (``apply_then_fail_rate``)."""
        upload.http_status = http_status
        if self._persist is not None:
            self._persist.save(upload.as_record())


def _row_count(body: Any, key: str) -> int:
    rows = body.get(key) if isinstance(body, dict) else None
    return len(rows) if isinstance(rows, list) else 0
