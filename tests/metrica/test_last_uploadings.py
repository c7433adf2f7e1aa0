"""``datetime_offset`` of ``GET /last_uploadings`` is an instant on the scale of the uploads'
``datetime`` (UTC), whatever the counter's time zone (issue 15, item 9)."""

from __future__ import annotations

from datetime import datetime, timedelta

from metrica_bridge.sandbox import SandboxServer
from tests.metrica.conftest import ClientFactory, contact


async def test_datetime_offset_is_read_as_utc_in_a_moscow_counter(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    async with make_client() as client:
        assert await client.counter_timezone() == "Europe/Moscow"  # UTC+3: a shift shows
        result = await client.upload_contacts([contact(1)])
        assert result.datetime is not None
        at = datetime.fromisoformat(result.datetime.replace("Z", "+00:00"))

        before = await client.last_uploadings(datetime_offset=at, limit=1000)
        after = await client.last_uploadings(datetime_offset=at + timedelta(seconds=1))

    # Strictly before the upload's second: not listed; a second later: listed.
    assert result.uploading_id not in {u["uploading_id"] for u in before}
    assert result.uploading_id in {u["uploading_id"] for u in after}
