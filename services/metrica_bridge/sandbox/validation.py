"""Field-level validation of upload bodies (metrica-api.md §5–§7, §10, §13).

Everything here looks at the body alone; checks that need the counter's data (contacts first,
mapped statuses, immutable creation dates) live in :mod:`.store`. Every bad value becomes one
:class:`ErrorItem` whose ``location`` names the row and field (``orders[3].create_date_time``),
so a client can isolate the bad rows of a rejected upload.

Written as plain functions over dicts rather than pydantic models: the sandbox validates
~20k rows/s, and the error locations must follow Metrica's field names exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, NamedTuple

from metrica_bridge.sandbox.errors import ApiError, ErrorItem

MERGE_MODES = frozenset({"SAVE", "UPDATE", "APPEND"})
STATUS_TYPES = frozenset({"IN_PROGRESS", "PAID", "CANCELLED", "SPAM", "OTHER"})
# Metrica documents no per-request limit for JSON (metrica-api.md §6): a hypothesis, settable
# as the ``max_request_rows`` fault.
DEFAULT_MAX_ROWS = 10_000

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2})?", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EMAIL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.ASCII)
_PHONE = re.compile(r"[1-9]\d{6,14}", re.ASCII)  # E.164: country code first, ≤15 digits
_MD5 = re.compile(r"[0-9a-f]{32}", re.ASCII)
_CLIENT_ID = re.compile(r"\d{1,20}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_STATUS_ID = re.compile(r"[\w:-]{1,255}", re.ASCII)
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_INT64_MAX = 2**63 - 1


class Invalid(Exception):
    """One bad value; ``where`` is appended to the field's location (``[2]``, ``.price``)."""

    def __init__(self, message: str, where: str = "", error_type: str = "invalid_parameter"):
        super().__init__(message)
        self.message = message
        self.where = where
        self.error_type = error_type


Check = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    return value


def _ident(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def _not_before_1970(value: str) -> None:
    if value[:4] < "1970":
        raise Invalid("dates before 1970 are not accepted")


def date_time(value: Any) -> str:
    if not isinstance(value, str) or not _DATETIME.fullmatch(value):
        raise Invalid("must be a date-time 'yyyy-MM-dd HH:mm:ss' or a date 'yyyy-MM-dd'")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("is not a real calendar date-time") from None
    _not_before_1970(value)
    return value


def _date(value: Any) -> str:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise Invalid("must be a date 'yyyy-MM-dd'")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise Invalid("is not a real calendar date") from None
    _not_before_1970(value)
    return value


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid("must be a finite number")
    return value


def _list_of(item: Callable[[Any], Any], what: str) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid(f"must be an array of {what}")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except Invalid as exc:
                raise Invalid(exc.message, f"[{i}]{exc.where}") from None
        return out

    return check


def _email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL.fullmatch(value):
        raise Invalid("must be a lower-case email with '@' and a domain")
    return value


def _phone(value: Any) -> str:
    if not isinstance(value, str) or not _PHONE.fullmatch(value):
        raise Invalid("must be digits only with the country code, e.g. 79995551111")
    return value


def _md5(value: Any) -> str:
    if not isinstance(value, str) or not _MD5.fullmatch(value):
        raise Invalid("must be an md5 as 32 lower-case hex digits")
    return value


def _client_id(value: Any) -> str:
    # Stored as a digit string: a ClientID is never a float (§14), and APPEND compares values.
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _INT64_MAX:
        return str(value)
    if isinstance(value, str) and _CLIENT_ID.fullmatch(value) and int(value) > 0:
        return value
    raise Invalid("must be a ClientID: a positive integer or a string of digits")


def _attribute_values(value: Any) -> list[Any]:
    # The sandbox has no /schema/attributes, so no custom attribute can exist yet (§6).
    if value != []:
        raise Invalid("refers to custom attributes, which must be created first (not emulated)")
    return []


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise Invalid("must be an ISO 4217 code such as RUB")
    return value


def _client_type(value: Any) -> str:
    if value != "CONTACT":
        raise Invalid("must be CONTACT")
    return "CONTACT"


def _products(value: Any) -> dict[str, int | float]:
    if not isinstance(value, dict):
        raise Invalid("must be an object {product_id: quantity}")
    for sku, quantity in value.items():
        if not sku.strip():
            raise Invalid("product id must not be empty", "")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity <= 0:
            raise Invalid("quantity must be a positive number", f".{sku}")
    return value


_GOAL_KEYS = frozenset({"goal_action_id", "price"})


def _goal(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("must be an object {goal_action_id, price?}")
    for key in value:
        if key not in _GOAL_KEYS:
            raise Invalid(f"unknown field {key!r}", f".{key}")
    if "goal_action_id" not in value:
        raise Invalid("is required", ".goal_action_id", "missing_parameter")
    try:
        _ident(value["goal_action_id"])
    except Invalid as exc:
        raise Invalid(exc.message, ".goal_action_id") from None
    price = value.get("price")
    if price is not None:
        try:
            if _number(price) < 0:
                raise Invalid("must not be negative")
        except Invalid as exc:
            raise Invalid(exc.message, ".price") from None
    return value


CONTACT_FIELDS: dict[str, Check] = {
    "uniq_id": _ident,
    "name": _text,
    "company_uniq_id": _text,
    "user_comment": _text,
    "create_date_time": date_time,
    "update_date_time": date_time,
    "client_ids": _list_of(_client_id, "ClientIDs"),
    "emails": _list_of(_email, "emails"),
    "phones": _list_of(_phone, "phones"),
    "emails_md5": _list_of(_md5, "md5 hashes"),
    "phones_md5": _list_of(_md5, "md5 hashes"),
    "birth_date": _date,
    "user_ids": _list_of(_ident, "strings"),
    "attribute_values": _attribute_values,
}
CONTACT_REQUIRED = ("uniq_id",)

ORDER_FIELDS: dict[str, Check] = {
    "id": _ident,
    "client_uniq_id": _ident,
    "client_type": _client_type,
    "create_date_time": date_time,
    "order_status": _ident,
    "update_date_time": date_time,
    "finish_date_time": date_time,
    "revenue": _number,
    "cost": _number,
    "currency": _currency,
    "products": _products,
    "goals": _list_of(_goal, "goals"),
    "attribute_values": _attribute_values,
    # Seen in third-party clients (metrica-api.md §6, unconfirmed); accepted as plain strings.
    "purchase_id": _text,
    "yclid": _text,
    "user_comment": _text,
}
ORDER_REQUIRED = ("id", "client_uniq_id", "client_type", "create_date_time", "order_status")

# Fields holding several values: APPEND adds to them (metrica-api.md §4).
MULTI_VALUED = frozenset(
    {"client_ids", "emails", "phones", "emails_md5", "phones_md5", "user_ids", "goals", "products"}
)


def snake_case(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def _unknown_field(name: str, known: dict[str, Check]) -> str:
    hint = snake_case(name)
    if hint != name and hint in known:
        return f"unknown field {name!r}: field names are snake_case, use {hint!r}"
    return f"unknown field {name!r}"


def _check_row(
    row: Any,
    where: str,
    fields: dict[str, Check],
    required: tuple[str, ...],
    errors: list[ErrorItem],
) -> None:
    if not isinstance(row, dict):
        errors.append(ErrorItem("invalid_uploading", "a row must be a JSON object", where))
        return
    for name in required:
        if row.get(name) is None:
            errors.append(ErrorItem("missing_parameter", f"{name} is required", f"{where}.{name}"))
    for name, value in row.items():
        check = fields.get(name)
        if check is None:
            errors.append(
                ErrorItem("invalid_parameter", _unknown_field(name, fields), f"{where}.{name}")
            )
        elif value is not None:
            try:
                row[name] = check(value)
            except Invalid as exc:
                errors.append(
                    ErrorItem(exc.error_type, f"{name} {exc.message}", f"{where}.{name}{exc.where}")
                )


def _rows(body: Any, key: str, max_rows: int) -> list[Any]:
    if not isinstance(body, dict):
        raise ApiError.of("invalid_uploading", f"the body must be a JSON object {{{key!r}: [...]}}")
    extra = [k for k in body if k != key]
    if extra:
        raise ApiError(
            400, [ErrorItem("invalid_parameter", f"unknown field {k!r}", k) for k in extra]
        )
    rows = body.get(key)
    if rows is None:
        raise ApiError.of("missing_parameter", f"{key} is required", key)
    if not isinstance(rows, list):
        raise ApiError.of("invalid_uploading", f"{key} must be an array", key)
    if not rows:
        raise ApiError.of("invalid_uploading", f"{key} must hold at least one row", key)
    if len(rows) > max_rows:
        raise ApiError.of(
            "too_much_rows", f"{key} holds {len(rows)} rows, at most {max_rows} per request", key
        )
    return rows


class Checked(NamedTuple):
    """Rows of an upload after field checks; any error means nothing may be applied."""

    rows: list[Any]
    errors: list[ErrorItem]


def _validate(
    body: Any,
    key: str,
    id_field: str,
    fields: dict[str, Check],
    required: tuple[str, ...],
    max_rows: int,
) -> Checked:
    """Checks every row (normalising values in place) and collects every error."""
    rows = _rows(body, key, max_rows)
    errors: list[ErrorItem] = []
    first_seen: dict[Any, int] = {}
    for i, row in enumerate(rows):
        where = f"{key}[{i}]"
        _check_row(row, where, fields, required, errors)
        if isinstance(row, dict) and isinstance(row.get(id_field), str):
            row_id = row[id_field]
            first = first_seen.setdefault(row_id, i)
            if first != i:
                # Same-id rows apply in random order in Metrica (§4): refuse them outright.
                errors.append(
                    ErrorItem(
                        "invalid_uploading",
                        f"{id_field} appears twice in one upload (first at {key}[{first}])",
                        f"{where}.{id_field}",
                    )
                )
    return Checked(rows, errors)


def validate_contacts(body: Any, max_rows: int = DEFAULT_MAX_ROWS) -> Checked:
    return _validate(body, "contacts", "uniq_id", CONTACT_FIELDS, CONTACT_REQUIRED, max_rows)


def validate_orders(body: Any, max_rows: int = DEFAULT_MAX_ROWS) -> Checked:
    return _validate(body, "orders", "id", ORDER_FIELDS, ORDER_REQUIRED, max_rows)


_STATUS_KEYS = frozenset({"id", "humanized", "type", "goal_action_ids"})


def validate_order_statuses(body: Any) -> list[dict[str, Any]]:
    """``{"order_statuses": [...]}`` (§7) → the statuses; raises ApiError listing every problem."""
    rows = _rows(body, "order_statuses", 1_000)
    errors: list[ErrorItem] = []
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = f"order_statuses[{i}]"
        if not isinstance(row, dict):
            errors.append(ErrorItem("invalid_parameter", "a status must be a JSON object", where))
            continue
        before = len(errors)
        for key in row:
            if key not in _STATUS_KEYS:
                msg = f"unknown field {key!r}"
                errors.append(ErrorItem("invalid_parameter", msg, f"{where}.{key}"))
        status_id = row.get("id")
        if status_id is None:
            errors.append(ErrorItem("missing_parameter", "id is required", f"{where}.id"))
        elif not isinstance(status_id, str) or not _STATUS_ID.fullmatch(status_id):
            msg = r"id must be 1-255 characters matching ^[\w-:]+$"
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.id"))
        elif status_id in seen:
            msg = "id appears twice in one request"
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.id"))
        else:
            seen.add(status_id)
        status_type = row.get("type")
        if status_type is None:
            errors.append(ErrorItem("missing_parameter", "type is required", f"{where}.type"))
        elif status_type not in STATUS_TYPES:
            msg = "type must be one of " + "|".join(sorted(STATUS_TYPES))
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.type"))
        humanized = row.get("humanized")
        if humanized is not None and (not isinstance(humanized, str) or len(humanized) > 4096):
            msg = "humanized must be a string of at most 4096 characters"
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.humanized"))
        goals = row.get("goal_action_ids")
        if goals is not None:
            if not isinstance(goals, list):
                msg = "goal_action_ids must be an array of strings"
                errors.append(ErrorItem("invalid_parameter", msg, f"{where}.goal_action_ids"))
            elif (
                len(goals) > 10
                or len(set(map(str, goals))) != len(goals)
                or not all(isinstance(g, str) and g for g in goals)
            ):
                msg = "goal_action_ids must hold at most 10 unique non-empty strings"
                errors.append(ErrorItem("invalid_parameter", msg, f"{where}.goal_action_ids"))
        if len(errors) == before:
            out.append(
                {
                    "id": status_id,
                    "humanized": humanized,
                    "type": status_type,
                    "goal_action_ids": list(goals or []),
                }
            )
    if errors:
        raise ApiError(400, errors)
    return out


_ITEM_NAME = _STATUS_ID  # list items and attributes: 1-255 characters, ^[\w-:]+$ (§8)
_LIST_MAX = 160_000
_PRODUCT_KEYS = frozenset({"attributes", "items"})
_ITEM_KEYS = frozenset({"name", "humanized"})


def validate_products(body: Any) -> list[dict[str, Any]]:
    """``POST /schema/products`` (§8): ``{"attributes": [...], "items": [{"name", "humanized"}]}``
    → the items; raises ApiError listing every problem. Attributes are checked for shape only
    (the sandbox keeps no product attributes)."""
    if not isinstance(body, dict):
        raise ApiError.of("invalid_json", "the body must be a JSON object {attributes, items}")
    errors: list[ErrorItem] = [
        ErrorItem("invalid_parameter", f"unknown field {k!r}", k)
        for k in body
        if k not in _PRODUCT_KEYS
    ]
    attributes = body.get("attributes")
    if attributes is None:
        errors.append(ErrorItem("missing_parameter", "attributes is required", "attributes"))
    elif not isinstance(attributes, list) or len(attributes) > _LIST_MAX:
        msg = f"attributes must be an array of at most {_LIST_MAX} attributes"
        errors.append(ErrorItem("invalid_parameter", msg, "attributes"))
    else:
        for i, attribute in enumerate(attributes):
            where = f"attributes[{i}]"
            if not isinstance(attribute, dict):
                errors.append(ErrorItem("invalid_parameter", "must be a JSON object", where))
                continue
            name = attribute.get("name")
            if not isinstance(name, str) or not _ITEM_NAME.fullmatch(name):
                msg = r"name must be 1-255 characters matching ^[\w-:]+$"
                errors.append(ErrorItem("invalid_parameter", msg, f"{where}.name"))
            if not isinstance(attribute.get("multivalued"), bool):
                msg = "multivalued is required: true or false"
                errors.append(ErrorItem("missing_parameter", msg, f"{where}.multivalued"))
    items = body.get("items", [])
    out: list[dict[str, Any]] = []
    if not isinstance(items, list) or len(items) > _LIST_MAX:
        msg = f"items must be an array of at most {_LIST_MAX} items"
        errors.append(ErrorItem("invalid_parameter", msg, "items"))
        items = []
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            errors.append(ErrorItem("invalid_parameter", "an item must be a JSON object", where))
            continue
        before = len(errors)
        for key in item:
            if key not in _ITEM_KEYS:
                msg = f"unknown field {key!r}"
                errors.append(ErrorItem("invalid_parameter", msg, f"{where}.{key}"))
        name = item.get("name")
        if name is None:
            errors.append(ErrorItem("missing_parameter", "name is required", f"{where}.name"))
        elif not isinstance(name, str) or not _ITEM_NAME.fullmatch(name):
            msg = r"name must be 1-255 characters matching ^[\w-:]+$"
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.name"))
        humanized = item.get("humanized")
        if humanized is not None and (not isinstance(humanized, str) or len(humanized) > 4096):
            msg = "humanized must be a string of at most 4096 characters"
            errors.append(ErrorItem("invalid_parameter", msg, f"{where}.humanized"))
        if len(errors) == before:
            out.append({"name": name, "humanized": humanized})
    if errors:
        raise ApiError(400, errors)
    return out


_GOAL_FIELDS = frozenset(
    {"id", "name", "type", "default_price", "is_retargeting", "is_favorite", "status",
     "conditions", "prev_goal_id", "flag", "goal_source"}
)  # fmt: skip


def validate_goal(body: Any) -> dict[str, Any]:
    """``POST /management/v1/counter/{id}/goals``: ``{"goal": {name, type, conditions}}``
    (metrica-api.md §7; the JS-goal shape is unconfirmed there) → the goal, without ``id``."""
    goal = body.get("goal") if isinstance(body, dict) else None
    if not isinstance(goal, dict):
        raise ApiError.of("invalid_parameter", 'the body must be {"goal": {...}}', "goal")
    errors: list[ErrorItem] = [
        ErrorItem("invalid_parameter", f"unknown field {k!r}", f"goal.{k}")
        for k in goal
        if k not in _GOAL_FIELDS
    ]
    name = goal.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        errors.append(ErrorItem("invalid_parameter", "name must be 1-255 characters", "goal.name"))
    goal_type = goal.get("type")
    if not isinstance(goal_type, str) or not goal_type:
        errors.append(ErrorItem("missing_parameter", "type is required", "goal.type"))
    conditions = goal.get("conditions", [])
    if not isinstance(conditions, list) or not all(
        isinstance(c, dict) and isinstance(c.get("type"), str) and isinstance(c.get("url"), str)
        for c in conditions
    ):
        msg = "conditions must be an array of {type, url} strings"
        errors.append(ErrorItem("invalid_parameter", msg, "goal.conditions"))
    elif goal_type == "action" and not conditions:
        msg = "a JavaScript-event goal needs a condition naming its identifier"
        errors.append(ErrorItem("invalid_parameter", msg, "goal.conditions"))
    if errors:
        raise ApiError(400, errors)
    return {
        "name": name,
        "type": goal_type,
        "conditions": [{"type": c["type"], "url": c["url"]} for c in conditions],
    }


def js_goal_ids(goal: dict[str, Any]) -> set[str]:
    """The identifiers a JavaScript-event goal is reached by (the ``reachGoal`` target): the
    ``url`` of its exact-match conditions. Other goal types are never reached from the CDP."""
    if goal.get("type") != "action":
        return set()
    return {c["url"] for c in goal.get("conditions", []) if c.get("type") in ("exact", "action")}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_no_constants).decode


def parse_json(raw: bytes, content_type: str | None) -> Any:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError.of(
            "invalid_parameter", "Content-Type must be application/json", "Content-Type"
        )
    try:
        return _decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError.of("invalid_json", "the body is not valid UTF-8 JSON") from None


def merge_mode(value: str | None) -> str:
    if value is None:
        raise ApiError.of("missing_parameter", "merge_mode is required", "merge_mode")
    if value not in MERGE_MODES:
        raise ApiError.of(
            "invalid_parameter", "merge_mode must be one of SAVE, UPDATE, APPEND", "merge_mode"
        )
    return value
