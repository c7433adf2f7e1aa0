"""The state store: ``open_store(STORE_URL)`` picks the backend and brings its schema up to date."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from metrica_bridge.config import ConfigError
from metrica_bridge.store.base import (
    Changes,
    Identity,
    IdentityUpdate,
    LedgerEntry,
    OrderState,
    ParkedEvent,
    Store,
    StoreError,
)

__all__ = [
    "Changes",
    "Identity",
    "IdentityUpdate",
    "LedgerEntry",
    "OrderState",
    "ParkedEvent",
    "Store",
    "StoreError",
    "open_store",
    "redact_url",
    "sqlite_path",
]

_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and error messages)."""
    if url.startswith("sqlite:"):
        return url  # a file path has no password; urlunsplit would drop its slashes
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            host = netloc.rsplit("@", 1)[1]
            netloc = f"{parts.username or ''}:***@{host}"
        query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path`` → ``rel/path``; ``sqlite:////abs/path`` → ``/abs/path``."""
    path = url[len("sqlite:///") :]
    if not url.startswith("sqlite:///") or not path or path.startswith(":memory:"):
        raise ConfigError(
            "STORE_URL must look like sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return path.split("?", 1)[0]


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store named by ``STORE_URL`` and apply pending schema migrations."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    store: Store
    if scheme == "sqlite":
        from metrica_bridge.store.sqlite import SqliteStore

        store = SqliteStore(sqlite_path(url))
    elif scheme in ("postgresql", "postgres"):
        from metrica_bridge.store.postgres import PostgresStore

        store = PostgresStore(url, display_url=redact_url(url))
    else:
        raise ConfigError(
            f"STORE_URL {redact_url(url)!r} has an unknown scheme: use sqlite:///path"
            " or postgresql://user@host/db"
        )
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
