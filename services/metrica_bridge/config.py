"""Service configuration (DESIGN.md §6).

Environment variables are the contract; a YAML file (``--config`` or ``METRICA_BRIDGE_CONFIG``)
may add to them, and the environment wins. Any librdkafka property can be passed as
``KAFKA_<PROPERTY>`` with dots written as underscores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from metrica_bridge import normalize
from metrica_bridge.events import EventKind
from metrica_bridge.logs import register_secret

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Settings of ours that start with KAFKA_ but are not librdkafka properties.
_NOT_LIBRDKAFKA = {"KAFKA_BOOTSTRAP_SERVERS"}

# Variables whose values are secrets (DESIGN.md §6): never printed, logged or put in an error.
# Each may be given as ``<NAME>_FILE`` instead, the path of a file holding the value (a mounted
# Kubernetes Secret, a Docker secret); the variable itself wins when both are set.
SECRET_VARIABLES = frozenset({"METRICA_TOKEN", "STORE_URL", "SCHEMA_REGISTRY_URL"})
# librdkafka properties that hold secrets: sasl.password, ssl.key.password,
# ssl.keystore.password, sasl.oauthbearer.client.secret, sasl.jaas.config, ssl.key.pem, ...
_SECRET_KAFKA_WORDS = ("PASSWORD", "SECRET", "JAAS", "KEY_PEM", "OAUTHBEARER_CONFIG")


class ConfigError(ValueError):
    """Configuration that cannot work; the message names the variable, never a secret."""


class TimezoneMismatch(ConfigError):
    """``METRICA_TIMEZONE`` names another zone than the counter's, without the override."""

    def __init__(self, configured: str, counter_zone: str, counter_id: int | None) -> None:
        self.configured = configured
        self.counter_zone = counter_zone
        counter = f"counter {counter_id}" if counter_id is not None else "the counter"
        super().__init__(
            f"METRICA_TIMEZONE={configured} differs from the time zone of {counter} in Metrica "
            f"({counter_zone}): every date sent would be shifted, for good. Unset "
            f"METRICA_TIMEZONE to use {counter_zone}, or set METRICA_TIMEZONE_OVERRIDE=true to "
            f"send dates in {configured} anyway"
        )


def is_secret_variable(name: str) -> bool:
    """Whether ``name`` (an environment variable) holds a secret: never print its value."""
    name = name.upper()
    return name in SECRET_VARIABLES or (
        name.startswith("KAFKA_") and any(word in name for word in _SECRET_KAFKA_WORDS)
    )


def _secret_parts(value: str) -> list[str]:
    """What of ``value`` must be masked: the whole value, and a URL's password alone (a URL
    is quoted redacted, ``user:***@host``, so its password can show up on its own)."""
    parts = [value.strip()]
    if "://" in value and "@" in value:
        userinfo = value.split("://", 1)[1].split("@", 1)[0]
        if ":" in userinfo:
            parts.append(userinfo.split(":", 1)[1])
    return [p for p in parts if len(p) >= 4]  # a 1-3 character "secret" would mask everything


def _resolve_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """``<SECRET>_FILE=/path`` → ``<SECRET>=<the file's content, stripped>`` (METRICA_TOKEN_FILE
    stays a setting of its own: it may also come from the YAML file)."""
    out = dict(env)
    for name, path in env.items():
        target = name[: -len("_FILE")]
        if not name.endswith("_FILE") or target == "METRICA_TOKEN":
            continue
        if not is_secret_variable(target):
            continue
        del out[name]  # not a librdkafka property (KAFKA_SASL_PASSWORD_FILE), not a setting
        if env.get(target):
            continue  # the variable itself wins, as METRICA_TOKEN does over its file
        try:
            out[target] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{name} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        if not out[target]:
            raise ConfigError(f"{name} names an empty file")
    return out


def _register_secrets(settings: Settings) -> None:
    """Every secret setting goes to the log redactor, so a library quoting one (a connection
    string in an error, a librdkafka line) is masked too."""
    values = {
        "STORE_URL": settings.store_url,
        "SCHEMA_REGISTRY_URL": settings.schema_registry_url or "",
        "METRICA_TOKEN": settings.metrica_token.get_secret_value()
        if settings.metrica_token
        else "",
    }
    for prop, value in settings.kafka_properties.items():
        values["KAFKA_" + prop.upper().replace(".", "_")] = value
    for name, value in values.items():
        if value and is_secret_variable(name):
            for part in _secret_parts(value):
                register_secret(part)


def describe_validation_error(error: ValidationError) -> str:
    """One line per invalid setting: the variable's name and the problem, never the value
    (pydantic's own text quotes the input, which for a model-level check is every setting,
    secrets included)."""
    problems: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item.get("loc", ())]
        if loc[:1] == ["kafka_properties"] and len(loc) > 1:
            name = "KAFKA_" + loc[1].upper().replace(".", "_")
        else:
            name = loc[0].upper() if loc else ""
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name and not message.startswith(name) else message)
    return "; ".join(dict.fromkeys(problems)) or "invalid configuration"


def librdkafka_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """``KAFKA_SESSION_TIMEOUT_MS=6000`` → ``{"session.timeout.ms": "6000"}``."""
    props: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("KAFKA_") and name not in _NOT_LIBRDKAFKA:
            props[name[len("KAFKA_") :].lower().replace("_", ".")] = value
    return props


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_properties: dict[str, str] = Field(default_factory=dict)
    schema_registry_url: str | None = None
    schemas_dir: Path = PROJECT_ROOT / "schemas"

    metrica_api_url: str = "https://api-metrika.yandex.net"
    metrica_counter_id: int | None = None
    metrica_token: SecretStr | None = None
    metrica_token_file: Path | None = None
    # Optional override of the counter's own zone (DESIGN.md §6); see timezone_for().
    metrica_timezone: str | None = None
    # Allows a METRICA_TIMEZONE that differs from the counter's zone (dates shifted on purpose).
    metrica_timezone_override: bool = False
    # Push the status map to /schema/order_statuses at start-up instead of waiting for
    # `metrica-bridge schema-sync` (docs/decisions.md, issue 15 item 8).
    metrica_schema_sync_on_start: bool = False

    store_url: str = "sqlite:///metrica-bridge.db"
    status_map_file: Path | None = None
    metrics_port: int = 9108
    metrics_host: str = "0.0.0.0"  # interface /metrics, /healthz, /readyz listen on

    topic_lead_created: str = EventKind.LEAD_CREATED.value
    topic_deal_status_changed: str = EventKind.DEAL_STATUS_CHANGED.value
    topic_payment_received: str = EventKind.PAYMENT_RECEIVED.value
    consumer_group_prefix: str = "metrica-bridge"

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Tuning knobs of our own (documented in the README's configuration table).
    create_topics: bool = True
    hash_identifiers: bool = False
    # The region national phone numbers are written in (ISO 3166 alpha-2), for phonenumbers.
    phone_default_region: str = "RU"
    worker_concurrency: int = Field(default=10_000, ge=1)
    max_in_flight_events: int = Field(default=10_000, ge=1)
    batch_max_records: int = Field(default=1_000, ge=1)
    batch_max_bytes: int = Field(default=2_000_000, ge=1_000)
    batch_linger_ms: int = Field(default=2_000, ge=0)
    metrica_max_parallel: int = Field(default=3, ge=1, le=3)
    metrica_requests_per_second: float = Field(default=5.0, gt=0)
    metrica_daily_budget: int = Field(default=5_000, ge=1)
    # Share of the daily budget kept out of the pace, for retries, reconciliation, schema-sync.
    metrica_budget_reserve: float = Field(default=0.1, ge=0.0, lt=1.0)
    # Quota days are [k*N, (k+1)*N) of Unix time: 86,400 resets at 00:00 GMT, as Metrica does.
    metrica_quota_day_s: int = Field(default=86_400, ge=1)
    # The largest request Metrica accepts is undocumented for JSON (docs/decisions.md).
    metrica_max_request_records: int = Field(default=10_000, ge=1)
    metrica_max_request_bytes: int = Field(default=10_000_000, ge=1_000)
    metrica_timeout_s: float = Field(default=30.0, gt=0)
    retry_budget_s: float = Field(default=300.0, ge=0)
    retry_max_attempts: int = Field(default=12, ge=1)
    park_max_wait_s: float = Field(default=3_600.0, ge=0)
    # How long a payment waits for its deal's creation time before the order is created at the
    # payment's time (create_date_time never changes in Metrica: rather late than wrong).
    creation_max_wait_s: float = Field(default=86_400.0, ge=0)
    align_max_wait_s: float = Field(default=30.0, ge=0)
    # How far past this host's clock an event's times may be; later ones are invalid (a time
    # from the future would make every later real event of its order stale).
    max_clock_skew_s: float = Field(default=3_600.0, ge=0, le=31_622_400)
    commit_interval_ms: int = Field(default=1_000, ge=10)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    ledger_retention_days: int = Field(default=30, ge=1)

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _no_direct_props(cls, value: Any) -> Any:
        return value or {}

    @field_validator("metrica_timezone", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("phone_default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return normalize.check_region(value)

    @model_validator(mode="after")
    def _read_token_file(self) -> Settings:
        if self.metrica_token is None and self.metrica_token_file is not None:
            try:
                token = self.metrica_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"METRICA_TOKEN_FILE cannot be read: {exc.strerror or type(exc).__name__}"
                ) from None
            self.metrica_token = SecretStr(token)
        return self

    def topics(self) -> dict[EventKind, str]:
        return {
            EventKind.LEAD_CREATED: self.topic_lead_created,
            EventKind.DEAL_STATUS_CHANGED: self.topic_deal_status_changed,
            EventKind.PAYMENT_RECEIVED: self.topic_payment_received,
        }

    def kind_of_topic(self, topic: str) -> EventKind:
        for kind, name in self.topics().items():
            if name == topic:
                return kind
        raise ConfigError(f"topic {topic!r} is not one of the configured topics")

    def group_id(self, kind: EventKind) -> str:
        return f"{self.consumer_group_prefix}.{self.topics()[kind]}"

    def kafka_common(self) -> dict[str, str]:
        """Properties applied to every consumer and producer the service creates."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **self.kafka_properties}

    def configured_timezone(self) -> str | None:
        """``METRICA_TIMEZONE`` checked (an IANA name), or None when unset."""
        if self.metrica_timezone is None:
            if self.metrica_timezone_override:
                raise ConfigError(
                    "METRICA_TIMEZONE_OVERRIDE is set but METRICA_TIMEZONE is not: "
                    "unset METRICA_TIMEZONE_OVERRIDE (the counter's zone is used)"
                )
            return None
        name = self.metrica_timezone.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"METRICA_TIMEZONE {name!r} is not an IANA time zone (e.g. Europe/Moscow); "
                "leave it unset to use the counter's own zone"
            ) from None
        return name

    def timezone_for(self, counter_zone: str) -> str:
        """The zone dates are rendered in, given the counter's ``time_zone_name``.

        Unset ``METRICA_TIMEZONE``: the counter's. Set to the same name: that zone. Set to
        another name: a :class:`TimezoneMismatch`, unless ``METRICA_TIMEZONE_OVERRIDE`` is
        true (then ``METRICA_TIMEZONE``; the caller warns). Zones compare by IANA name, so an
        alias (``W-SU`` for ``Europe/Moscow``) counts as different: write the counter's name.
        """
        configured = self.configured_timezone()
        if configured is None or configured == counter_zone or self.metrica_timezone_override:
            return configured or counter_zone
        raise TimezoneMismatch(configured, counter_zone, self.metrica_counter_id)

    def require_metrica(self) -> tuple[int, SecretStr]:
        if self.metrica_counter_id is None:
            raise ConfigError("METRICA_COUNTER_ID is not set")
        if self.metrica_token is None or not self.metrica_token.get_secret_value():
            raise ConfigError("METRICA_TOKEN or METRICA_TOKEN_FILE is not set")
        return self.metrica_counter_id, self.metrica_token


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """YAML file < environment < explicit overrides (from CLI flags)."""
    env = _resolve_secret_files(os.environ if environ is None else environ)
    file_values: dict[str, Any] = {}
    path = config_file or (
        Path(env["METRICA_BRIDGE_CONFIG"]) if env.get("METRICA_BRIDGE_CONFIG") else None
    )
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {type(exc).__name__}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        file_values = {str(k).lower(): v for k, v in loaded.items()}
    env_values = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    kafka_props = {
        **{str(k): str(v) for k, v in (file_values.pop("kafka_properties", None) or {}).items()},
        **librdkafka_overrides(env),
    }
    values = {**file_values, **env_values, **overrides, "kafka_properties": kafka_props}
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    _register_secrets(settings)
    return settings
