"""Structured logging (structlog): JSON in production, a readable console in the demo.

Lines about an event carry ``event_id``, ``topic``, ``partition`` and ``offset``. Personal data
and the token never reach a log line: callers log counts and hashes, and a last-line-of-defence
processor masks anything that looks like a phone, an email or an OAuth token. Standard
``logging`` records (librdkafka's, asyncio's) are routed through the same processors.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

_EMAIL = re.compile(r"[^\s@\"']+@[^\s@\"']+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d\s()\-]{8,}\d(?![\w.])")
_OAUTH = re.compile(r"(OAuth|Bearer)\s+\S+", re.IGNORECASE)
_SECRETS: set[str] = set()
# Values that say which record a line is about. A run of 10+ digits there is an id (a numeric
# event id, a UUID's last group, a topic's suffix), not a phone, and masking it would hide the
# event the line is about; secrets and emails are still masked in them.
_IDENTIFYING = frozenset({"event_id", "topic", "partitions", "logger"})


def register_secret(value: str) -> None:
    """Make sure this exact string (the token) is masked wherever it would appear."""
    if value:
        _SECRETS.add(value)


def redact(text: str, *, phones: bool = True) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    text = _OAUTH.sub(r"\1 ***", text)
    text = _EMAIL.sub("<email>", text)
    return _PHONE.sub("<phone>", text) if phones else text


def _redact_value(value: Any, phones: bool) -> Any:
    if isinstance(value, str):
        return redact(value, phones=phones)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, phones) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, phones) for k, v in value.items()}
    return value


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key not in ("timestamp", "level"):
            event_dict[key] = _redact_value(value, phones=key not in _IDENTIFYING)
    return event_dict


def configure(level: str = "INFO", fmt: str = "json", file: TextIO | None = None) -> None:
    """``file``: where lines go (default stderr; the demo sends them to a file)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=file or cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
    _route_stdlib()


class _Stderr:
    """Whatever ``sys.stderr`` is at the moment of writing, not at configuration: a runner that
    swaps stderr (a test's CliRunner, a supervisor) and closes its copy must not make every
    later log line raise."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _route_stdlib() -> None:
    """Warnings of the libraries below us (asyncio's "Task was destroyed", httpx, Python
    warnings) come through the standard ``logging``: give them our format and masking too,
    instead of ``logging.lastResort``'s bare lines on stderr."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    handler = _ToStructlog(source=None)
    handler.setLevel(logging.WARNING)
    root.addHandler(handler)
    logging.captureWarnings(True)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


class _ToStructlog(logging.Handler):
    """Forwards standard ``logging`` records to structlog, so every line the service prints
    has one format: librdkafka's (through confluent-kafka's ``logger``, ``source=librdkafka``)
    and other libraries' (``source`` = the logger's name)."""

    def __init__(self, source: str | None) -> None:
        super().__init__()
        self._source = source

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = get_logger("stdlib").bind(source=self._source or record.name)
            fields: dict[str, Any] = {}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            message = redact(record.getMessage())
            if record.levelno >= logging.ERROR:
                logger.error(message, **fields)
            elif record.levelno >= logging.WARNING:
                logger.warning(message, **fields)
            else:
                logger.info(message, **fields)
        except Exception:
            self.handleError(record)


def kafka_logger() -> logging.Logger:
    """The ``logger`` to give confluent-kafka clients."""
    logger = logging.getLogger("metrica_bridge.librdkafka")
    if not logger.handlers:
        logger.addHandler(_ToStructlog(source="librdkafka"))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
