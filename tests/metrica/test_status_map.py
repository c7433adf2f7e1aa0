from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from metrica_bridge.metrica.status_map import (
    StatusMapError,
    default_status_map,
    load_status_map,
    parse_status_map,
)

DESIGN_MAP = """
initial_status: new          # CRM status used for the order made by lead-created
paid_status: won             # CRM status applied by payment-received
statuses:                    # CRM status code → Metrica order status
  new:       {id: new, type: IN_PROGRESS, humanized: "Новый"}
  qualified: {id: qualified, type: OTHER, humanized: "Качественный лид", goals: [good_lead]}
  won:       {id: won, type: PAID, humanized: "Оплачен"}
  lost:      {id: lost, type: CANCELLED, humanized: "Отменён"}
  junk:      {id: junk, type: SPAM, humanized: "Спам"}
"""


def _map(**statuses: Any) -> dict[str, Any]:
    return {
        "initial_status": "a",
        "paid_status": "a",
        "statuses": {"a": {"id": "a", "type": "PAID"}, **statuses},
    }


def test_design_map_loads_and_translates(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(DESIGN_MAP, encoding="utf-8")
    status_map = load_status_map(path)
    assert status_map.initial.id == "new"
    assert status_map.paid.type == "PAID"
    qualified = status_map.translate("qualified")
    assert qualified is not None
    assert qualified.goals == ("good_lead",)
    assert status_map.translate("unknown") is None
    body = status_map.to_order_statuses()
    assert body[1] == {
        "id": "qualified",
        "type": "OTHER",
        "humanized": "Качественный лид",
        "goal_action_ids": ["good_lead"],
    }
    assert all(isinstance(s["goal_action_ids"], list) for s in body)


def test_default_map_without_file() -> None:
    status_map = load_status_map(None)
    assert status_map == default_status_map()
    assert status_map.initial.id == "IN_PROGRESS"
    assert status_map.paid.id == "PAID"
    assert status_map.translate("cancelled") is not None
    assert status_map.translate("qualified") is None


def test_two_crm_codes_may_share_one_metrica_status() -> None:
    data = _map(b={"id": "a", "type": "PAID"})
    status_map = parse_status_map(data)
    assert len(status_map.to_order_statuses()) == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_map(b={"id": "bad id", "type": "PAID"}), "statuses.b.id"),
        (_map(b={"id": "x" * 256, "type": "PAID"}), "statuses.b.id"),
        (_map(b={"id": "", "type": "PAID"}), "statuses.b.id"),
        (_map(b={"type": "PAID"}), "statuses.b.id"),
        (_map(b={"id": "b", "type": "DONE"}), "statuses.b.type"),
        (_map(b={"id": "b"}), "statuses.b.type"),
        (
            _map(b={"id": "b", "type": "OTHER", "goals": [f"g{i}" for i in range(11)]}),
            "statuses.b.goals",
        ),
        (_map(b={"id": "b", "type": "OTHER", "goals": ["g", "g"]}), "statuses.b.goals"),
        (_map(b={"id": "b", "type": "OTHER", "colour": "red"}), "statuses.b"),
        (_map(b={"id": "a", "type": "SPAM"}), "statuses.b"),
        (_map(b="PAID"), "statuses.b"),
        ({"paid_status": "a", "statuses": {"a": {"id": "a", "type": "PAID"}}}, "initial_status"),
        (
            {
                "initial_status": "a",
                "paid_status": "zz",
                "statuses": {"a": {"id": "a", "type": "PAID"}},
            },
            "paid_status",
        ),
        ({"initial_status": "a", "paid_status": "a", "statuses": {}}, "statuses"),
        (
            {
                "initial_status": "a",
                "paid_status": "a",
                "statuses": {"a": {"id": "a", "type": "PAID"}},
                "extra": 1,
            },
            "extra",
        ),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_invalid_maps_name_the_key(data: Any, needle: str) -> None:
    with pytest.raises(StatusMapError, match=needle.replace(".", r"\.")):
        parse_status_map(data)


def test_id_may_hold_word_chars_dash_and_colon() -> None:
    status_map = parse_status_map(
        _map(b={"id": "stage-2:ok_Ё", "type": "OTHER", "goals": [f"g{i}" for i in range(10)]})
    )
    assert status_map.translate("b") is not None


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("statuses: [unclosed", encoding="utf-8")
    with pytest.raises(StatusMapError, match=r"broken\.yaml: not valid YAML"):
        load_status_map(broken)
    with pytest.raises(StatusMapError, match="cannot be read"):
        load_status_map(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "initial_status: a\npaid_status: a\nstatuses:\n  a: {id: a, type: NOPE}\n", encoding="utf-8"
    )
    with pytest.raises(StatusMapError, match=r"bad.yaml: statuses\.a\.type"):
        load_status_map(bad)
