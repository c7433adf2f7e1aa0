"""Events written with older schema versions decode with the current reader schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from metrica_bridge import events
from metrica_bridge.codec import Codec, DecodeError, SchemaLoadError, WireFormat
from tests.codec.records import ALL_RECORDS, DEAL, LEAD, PAYMENT, RECORDS, SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer

_V1_DROPPED = {LEAD: {"yclid", "utm", "consent"}, DEAL: {"products", "version"}}


def test_history_versions_are_known(codec: Codec) -> None:
    assert codec.versions(LEAD) == ("v1", "v2")
    assert codec.versions(DEAL) == ("v1", "v2")
    assert codec.versions(PAYMENT) == ("v1",)
    assert set(codec.schema_names) == set(events.SCHEMA_FILES)


def test_lead_v1_decodes_with_current_defaults(codec: Codec) -> None:
    record = RECORDS[LEAD][0]
    value = codec.encode(LEAD, record, writer_version="v1")
    decoded = codec.decode(value)
    assert decoded.schema_name == LEAD
    expected = {**record, "yclid": None, "utm": None, "consent": True}
    assert decoded.record == expected
    event = events.parse_event(decoded.schema_name, decoded.record)
    assert isinstance(event, events.LeadCreated)
    assert event.consent is True
    assert event.client.phones == ("79995551111",)
    assert event.client_ids == ("1712345678901234567",)


def test_deal_v1_decodes_with_current_defaults(codec: Codec) -> None:
    record = RECORDS[DEAL][0]
    decoded = codec.decode(codec.encode(DEAL, record, writer_version="1"))
    assert decoded.record == {**record, "products": [], "version": None}
    event = events.parse_event(decoded.schema_name, decoded.record)
    assert isinstance(event, events.DealStatusChanged)
    assert event.products == ()
    assert event.version is None
    assert str(event.revenue) == "125000.50"


@pytest.mark.parametrize(("name", "record"), ALL_RECORDS)
@pytest.mark.parametrize("wire", list(WireFormat))
def test_every_kept_version_resolves_to_the_current_schema(
    registry: SchemaRegistryServer, name: str, record: dict[str, Any], wire: WireFormat
) -> None:
    """The rule of schemas/README.md: any version in history must still decode."""
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as codec:
        for version in codec.versions(name):
            value = codec.encode(name, record, wire, writer_version=version)
            decoded = codec.decode(value)
            dropped = _V1_DROPPED.get(name, set()) if version == "v1" else set()
            for field, expected in record.items():
                if field not in dropped:
                    assert decoded.record[field] == expected, (version, field)
            events.parse_event(decoded.schema_name, decoded.record)


def test_old_versions_have_distinct_fingerprints(codec: Codec) -> None:
    headers = {
        codec.encode(name, record, writer_version=version)[:10]
        for name, record in ((n, RECORDS[n][0]) for n in RECORDS)
        for version in codec.versions(name)
    }
    assert len(headers) == 5


def test_readme_lists_every_version_and_fingerprint(codec: Codec) -> None:
    readme = (SCHEMAS_DIR / "README.md").read_text()
    for name in codec.schema_names:
        short = name.rsplit(".", 1)[1]
        for version in codec.versions(name):
            record = RECORDS[name][0]
            fingerprint = codec.encode(name, record, writer_version=version)[2:10].hex()
            assert f"| {short} | {version}" in readme
            assert f"`{fingerprint}`" in readme


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    return target


def test_evolving_a_schema_as_the_readme_says(tmp_path: Path) -> None:
    """Move the current file into history as v<N>, add an optional field with a default."""
    schemas = _copy_schemas(tmp_path)
    current = schemas / "payment_received.avsc"
    (schemas / "history" / "PaymentReceived").mkdir()
    shutil.copy(current, schemas / "history" / "PaymentReceived" / "v1.avsc")
    source = json.loads(current.read_text())
    source["fields"].append({"name": "method", "type": ["null", "string"], "default": None})
    current.write_text(json.dumps(source))

    old_codec = Codec.from_dir(SCHEMAS_DIR)
    new_codec = Codec.from_dir(schemas)
    assert new_codec.versions(PAYMENT) == ("v1", "v2")
    record = RECORDS[PAYMENT][0]
    # Events from producers still on v1 decode, with the new field's default.
    assert new_codec.decode(old_codec.encode(PAYMENT, record)).record == {**record, "method": None}
    new_value = new_codec.encode(PAYMENT, {**record, "method": "card"})
    assert new_codec.decode(new_value).record["method"] == "card"
    # A consumer decodes only versions it knows: deploy consumers before producers.
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        old_codec.decode(new_value)


def test_history_file_with_wrong_record_name_is_refused(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    shutil.copy(schemas / "payment_received.avsc", schemas / "history" / "LeadCreated" / "v2.avsc")
    with pytest.raises(SchemaLoadError, match=r"expected 'crm\.events\.LeadCreated'"):
        Codec.from_dir(schemas)


def test_history_file_names_are_checked(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    shutil.copy(schemas / "lead_created.avsc", schemas / "history" / "LeadCreated" / "old.avsc")
    with pytest.raises(SchemaLoadError, match=r"v<N>\.avsc"):
        Codec.from_dir(schemas)


def test_unparsable_schema_file_is_refused(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    (schemas / "deal_status_changed.avsc").write_text('{"type": "record", "name": ')
    with pytest.raises(SchemaLoadError, match="cannot read"):
        Codec.from_dir(schemas)
    (schemas / "deal_status_changed.avsc").write_text(
        '{"type": "record", "name": "crm.events.DealStatusChanged",'
        ' "fields": [{"name": "a", "type": "no-such-type"}]}'
    )
    with pytest.raises(SchemaLoadError, match="not a valid Avro schema"):
        Codec.from_dir(schemas)
