"""Realistic CRM event records in the current schemas' shape (what fastavro reads and writes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from metrica_bridge.config import PROJECT_ROOT

SCHEMAS_DIR = PROJECT_ROOT / "schemas"
LEAD = "crm.events.LeadCreated"
DEAL = "crm.events.DealStatusChanged"
PAYMENT = "crm.events.PaymentReceived"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# Full records in the current schemas' shape, covering every union branch at least once.
RECORDS: dict[str, list[dict[str, Any]]] = {
    LEAD: [
        {
            "event_id": "ev-lead-0001",
            "occurred_at": _t("2024-05-17T09:30:12.345+00:00"),
            "lead_id": "L-1001",
            "deal_id": "D-2001",
            "client": {
                "uniq_id": "C-42",
                "name": "Иван Петров",
                "phones": ["+7 (999) 555-11-11", "8 999 555 11 11"],
                "emails": [" Mail@Yandex.RU "],
            },
            "metrica_client_id": "1712345678901234567",
            "yclid": "7365126539182731000",
            "utm": {
                "source": "yandex",
                "medium": "cpc",
                "campaign": "spring-sale",
                "content": None,
                "term": "купить диван",
            },
            "consent": True,
        },
        {
            "event_id": "ev-lead-0002",
            "occurred_at": _t("2024-12-31T23:59:59.999+03:00"),
            "lead_id": "L-1002",
            "deal_id": None,
            "client": {"uniq_id": "C-43", "name": None, "phones": [], "emails": []},
            "metrica_client_id": None,
            "yclid": None,
            "utm": None,
            "consent": False,
        },
    ],
    DEAL: [
        {
            "event_id": "ev-deal-0001",
            "occurred_at": _t("2024-05-18T10:00:00.001+00:00"),
            "deal_id": "D-2001",
            "client_uniq_id": "C-42",
            "deal_created_at": _t("2024-05-17T09:30:12.345+00:00"),
            "status": "won",
            "revenue": Decimal("125000.50"),
            "cost": Decimal("3200.00"),
            "currency": "RUB",
            "products": [{"sku": "SOFA-1", "quantity": 1}, {"sku": "PILLOW-Ж", "quantity": 4}],
            "version": 7,
        },
        {
            "event_id": "ev-deal-0002",
            "occurred_at": _t("1970-01-01T00:00:00+00:00"),
            "deal_id": "D-2002",
            "client_uniq_id": "C-43",
            "deal_created_at": _t("1970-01-01T00:00:00+00:00"),
            "status": "qualified",
            "revenue": None,
            "cost": Decimal("0.01"),
            "currency": None,
            "products": [],
            "version": None,
        },
    ],
    PAYMENT: [
        {
            "event_id": "ev-pay-0001",
            "occurred_at": _t("2024-05-19T08:15:00+00:00"),
            "payment_id": "P-1",
            "deal_id": "D-2001",
            "client_uniq_id": "C-42",
            "amount": Decimal("9999999999999999.99"),
            "currency": "USD",
            "deal_created_at": _t("2024-05-17T09:30:12.345+00:00"),
        },
        {
            "event_id": "ev-pay-0002",
            "occurred_at": _t("2038-01-19T03:14:08+00:00"),
            "payment_id": "P-2",
            "deal_id": "D-2002",
            "client_uniq_id": "C-43",
            "amount": Decimal("0.00"),
            "currency": "RUB",
            "deal_created_at": None,
        },
    ],
}

ALL_RECORDS = [(name, record) for name, records in RECORDS.items() for record in records]
