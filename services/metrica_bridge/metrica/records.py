"""Typed CDP records (detailed JSON format) that render to the dicts Metrica expects.

Rendering rules (metrica-api.md §5, §6, §10): snake_case keys; ``*_date_time`` as
``yyyy-MM-dd HH:mm:ss`` local to the counter's time zone, converted from aware datetimes;
decimals as JSON numbers (integers when whole); ``products`` as ``{sku: quantity}``; ``goals``
as ``[{goal_action_id, price?}]``; ClientIDs as digit strings. Empty and unset fields are left
out, because under ``UPDATE`` a field that is sent replaces what Metrica holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from metrica_bridge import normalize

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Text = Annotated[str, Field(min_length=1, max_length=255)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]


def render_datetime(value: datetime, zone: ZoneInfo | str) -> str:
    """An aware datetime as Metrica's local time in ``zone``."""
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def render_decimal(value: Decimal) -> int | float:
    # float's repr is the shortest round-trip form, exact for the 15 significant digits any
    # realistic amount needs; whole amounts stay integers (exact at any size).
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("must be timezone-aware")
    if value < _EPOCH:
        raise ValueError("Metrica accepts no dates before 1970")
    return value


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


PERSONAL_LISTS = ("emails", "phones", "emails_md5", "phones_md5")


class ContactRecord(_Record):
    uniq_id: Text
    name: str | None = None
    company_uniq_id: str | None = None
    user_comment: str | None = None
    create_date_time: datetime | None = None
    update_date_time: datetime | None = None
    client_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    emails_md5: tuple[str, ...] = ()
    phones_md5: tuple[str, ...] = ()

    _dates = field_validator("create_date_time", "update_date_time")(_aware)

    @field_validator("client_ids")
    @classmethod
    def _digit_strings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if normalize.client_id(item) is None:
                raise ValueError("a ClientID must be a string of 1-20 digits")
        return tuple(normalize.unique(list(value)))

    def render(self, zone: ZoneInfo | str) -> dict[str, Any]:
        out: dict[str, Any] = {"uniq_id": self.uniq_id}
        for key in ("name", "company_uniq_id", "user_comment"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        for key in ("create_date_time", "update_date_time"):
            if (when := getattr(self, key)) is not None:
                out[key] = render_datetime(when, zone)
        if self.client_ids:
            out["client_ids"] = list(self.client_ids)
        # Every contact states all four personal identifier lists, the empty ones too: under
        # merge_mode=UPDATE a field left out keeps what Metrica holds, a list sent replaces it
        # (metrica-api.md §4: stored 1,2 + sent 1,3 = 1,3). So withdrawn consent, or hashing
        # switched on after raw values went out, removes them instead of leaving them there
        # (DESIGN.md §3). ClientIDs are not consent-bound and are never taken back.
        for key in PERSONAL_LISTS:
            out[key] = list(getattr(self, key))
        return out


class Goal(_Record):
    goal_action_id: Text
    price: Money | None = None

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"goal_action_id": self.goal_action_id}
        if self.price is not None:
            out["price"] = render_decimal(self.price)
        return out


class OrderRecord(_Record):
    id: Text
    client_uniq_id: Text
    client_type: Literal["CONTACT"] = "CONTACT"
    create_date_time: datetime
    order_status: Text
    update_date_time: datetime | None = None
    finish_date_time: datetime | None = None
    revenue: Money | None = None
    cost: Money | None = None
    currency: str | None = None
    products: Mapping[str, int] = Field(default_factory=dict)
    goals: tuple[Goal, ...] = ()

    _dates = field_validator("create_date_time", "update_date_time", "finish_date_time")(_aware)

    @field_validator("products", mode="before")
    @classmethod
    def _products(cls, value: Any) -> Any:
        # Accept the event's [{sku, quantity}] as well as a mapping; repeated SKUs add up.
        if isinstance(value, list | tuple):
            merged: dict[str, int] = {}
            for item in value:
                sku = item["sku"] if isinstance(item, Mapping) else item.sku
                qty = item["quantity"] if isinstance(item, Mapping) else item.quantity
                merged[sku] = merged.get(sku, 0) + int(qty)
            return merged
        return value

    @field_validator("products")
    @classmethod
    def _quantities(cls, value: Mapping[str, int]) -> Mapping[str, int]:
        if any(q < 0 for q in value.values()) or any(not k for k in value):
            raise ValueError("products need non-empty SKUs and non-negative quantities")
        return dict(value)

    def render(self, zone: ZoneInfo | str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "client_uniq_id": self.client_uniq_id,
            "client_type": self.client_type,
            "create_date_time": render_datetime(self.create_date_time, zone),
            "order_status": self.order_status,
        }
        for key in ("update_date_time", "finish_date_time"):
            if (when := getattr(self, key)) is not None:
                out[key] = render_datetime(when, zone)
        for key in ("revenue", "cost"):
            if (amount := getattr(self, key)) is not None:
                out[key] = render_decimal(amount)
        if self.currency:
            out["currency"] = self.currency
        if self.products:
            out["products"] = dict(self.products)
        if self.goals:
            out["goals"] = [g.render() for g in self.goals]
        return out
