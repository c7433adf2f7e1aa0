"""``metrica-bridge replay`` on the command line: output, exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from metrica_bridge.cli import app
from metrica_bridge.config import Settings
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.replay import BrokerUnavailable, ReplayOptions, replay
from metrica_bridge.steps.dlq import dlq_topic
from tests.replay.support import FAST_GROUP, Dead, put_dead
from tests.support.kafka import TopicFactory, consume_all


def _env(settings: Settings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        **{"KAFKA_" + k.upper().replace(".", "_"): v for k, v in FAST_GROUP.items()},
        "CONSUMER_GROUP_PREFIX": settings.consumer_group_prefix,
        "LOG_LEVEL": "WARNING",
    }


def test_cli_dry_run_then_replay(bootstrap: str, topics: TopicFactory) -> None:
    settings = topics.crm_settings(partitions=1)
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1"),
            Dead(deals, b"D2", b"v2", ErrorClass.DECODE_ERROR),
            Dead(deals, b"D3", b"v3", ErrorClass.DECODE_ERROR, replays=3),
        ],
    )
    runner = CliRunner()
    env = _env(settings)

    dry = runner.invoke(app, ["replay", "--dlq", dlq_topic(deals), "--dry-run"], env=env)

    assert dry.exit_code == 0, dry.output
    assert "DRY RUN" in dry.output
    assert "decode_error" in dry.output
    assert "retry_exhausted" in dry.output
    assert "1 record(s) refused" in dry.output
    assert consume_all(bootstrap, deals, 0, timeout=2) == []

    real = runner.invoke(
        app,
        ["replay", "--dlq", dlq_topic(deals), "--error-class", "retry_exhausted", "--rate", "50"],
        env=env,
    )

    assert real.exit_code == 0, real.output
    assert [m.key for m in consume_all(bootstrap, deals, 1, timeout=10)] == [b"D1"]


def test_cli_errors_exit_non_zero(topics: TopicFactory) -> None:
    settings = topics.crm_settings(partitions=1)
    runner = CliRunner()
    env = _env(settings)

    unknown = runner.invoke(app, ["replay", "--dlq", "no-such-topic.dlq"], env=env)
    assert unknown.exit_code == 2
    assert "does not exist" in unknown.output

    bad_time = runner.invoke(app, ["replay", "--dlq", "x.dlq", "--since", "last week"], env=env)
    assert bad_time.exit_code == 2
    assert "ISO 8601" in bad_time.output


def test_unreachable_broker_is_an_error(topics: TopicFactory) -> None:
    settings = topics.crm_settings(partitions=1).model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1"}
    )
    with pytest.raises(BrokerUnavailable, match="unreachable") as caught:
        replay(settings, ReplayOptions("x.dlq", request_timeout_s=1))
    assert caught.value.exit_code == 1
