"""Async client of the Metrica CDP API (metrica-api.md §2–§9, §11–§12).

Every attempt goes through the process's :class:`QuotaGovernor`, is classified by
:func:`classify`, counted in ``metrica_bridge_metrica_requests_total{endpoint,result}``, and
retried under :class:`RetryPolicy` when its class allows. Writes whose outcome is unclear are
re-sent only when re-sending is idempotent (merge modes SAVE and UPDATE, the status schema).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import SecretStr

from metrica_bridge.config import Settings
from metrica_bridge.logs import get_logger, register_secret
from metrica_bridge.metrica.classify import (
    Outcome,
    Success,
    UploadResult,
    classify,
    classify_exception,
)
from metrica_bridge.metrica.errors import (
    MetricaError,
    PermanentError,
    RetryExhausted,
    SetupError,
    ThrottledError,
    TransientError,
    UnclearOutcome,
)
from metrica_bridge.metrica.quota import QuotaGovernor, shared_governor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.metrics import METRICA_REQUEST_DURATION, METRICA_REQUESTS

MergeMode = Literal["SAVE", "UPDATE", "APPEND"]
BeforeSend = Callable[[], Awaitable[None]]
MERGE_MODES: tuple[str, ...] = ("SAVE", "UPDATE", "APPEND")
# SAVE and UPDATE converge on the same state however often they are applied; APPEND does not.
IDEMPOTENT_MODES = frozenset({"SAVE", "UPDATE"})
METRICA_DATETIME = "%Y-%m-%d %H:%M:%S"

log = get_logger("metrica_bridge.metrica.client")


class _OAuth(httpx.Auth):
    """Adds ``Authorization: OAuth <token>`` at send time, so the token sits in no default
    header, URL or repr."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"OAuth {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_OAuth(token=**********)"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        raise TypeError("render datetimes in the counter's time zone before sending")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(body: Any) -> bytes:
    return json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), default=_json_default
    ).encode()


class MetricaClient:
    """One counter, one token. Use as ``async with MetricaClient(...) as client:``."""

    def __init__(
        self,
        *,
        api_url: str,
        counter_id: int,
        token: SecretStr,
        governor: QuotaGovernor | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        secret = token.get_secret_value()
        if not secret:
            raise ValueError("the Metrica token is empty")
        register_secret(secret)  # the log redactor masks it wherever it would appear
        self.api_url = api_url.rstrip("/")
        self.counter_id = counter_id
        self.governor = governor or QuotaGovernor()
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            auth=_OAuth(token),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._timezone: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        governor: QuotaGovernor | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> MetricaClient:
        counter_id, token = settings.require_metrica()
        if governor is None:
            governor = shared_governor(
                token.get_secret_value(),
                max_parallel=settings.metrica_max_parallel,
                requests_per_second=settings.metrica_requests_per_second,
                daily_budget=settings.metrica_daily_budget,
                reserve=settings.metrica_budget_reserve,
                quota_day_s=settings.metrica_quota_day_s,
            )
        # METRICA_TIMEZONE does not stand in for the counter's zone here: the service compares
        # the two at start-up (Settings.timezone_for) and renders dates in the zone it chose.
        return cls(
            api_url=settings.metrica_api_url,
            counter_id=counter_id,
            token=token,
            governor=governor,
            retry=retry or RetryPolicy.from_settings(settings),
            timeout_s=settings.metrica_timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"MetricaClient(api_url={self.api_url!r}, counter_id={self.counter_id})"

    async def __aenter__(self) -> MetricaClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def cdp_url(self) -> str:
        return f"{self.api_url}/cdp/api/v1/counter/{self.counter_id}"

    # -- endpoints ----------------------------------------------------------------------------

    async def upload_contacts(
        self, records: Sequence[Mapping[str, Any]], merge_mode: MergeMode = "UPDATE"
    ) -> UploadResult:
        return await self._upload("contacts", records, merge_mode)

    async def upload_orders(
        self, records: Sequence[Mapping[str, Any]], merge_mode: MergeMode = "UPDATE"
    ) -> UploadResult:
        return await self._upload("orders", records, merge_mode)

    async def upload_encoded(
        self,
        entity: Literal["contacts", "orders"],
        encoded: Sequence[bytes],
        merge_mode: MergeMode = "UPDATE",
        *,
        paced: bool = False,
        before_send: BeforeSend | None = None,
        on_unclear: BeforeSend | None = None,
    ) -> UploadResult:
        """Upload records already encoded as JSON objects (the batcher encodes each once, to
        know its size); the body is those bytes joined, not a second encoding. ``paced``,
        ``before_send`` and ``on_unclear``: see :meth:`_call`."""
        if not encoded:
            raise ValueError("nothing to upload")
        content = b'{"%s":[%s]}' % (entity.encode(), b",".join(encoded))
        return await self._post_upload(
            entity,
            content,
            len(encoded),
            merge_mode,
            paced=paced,
            before_send=before_send,
            on_unclear=on_unclear,
        )

    async def get_order_statuses(self) -> list[dict[str, Any]]:
        outcome = await self._call(
            "order_statuses_get", "GET", f"{self.cdp_url}/schema/order_statuses", resend_safe=True
        )
        statuses = outcome.body.get("order_statuses") if isinstance(outcome.body, dict) else None
        return [s for s in statuses or [] if isinstance(s, dict)]

    async def put_order_statuses(self, statuses: Sequence[Mapping[str, Any]]) -> None:
        # Posting the same map again leaves the same map: safe to re-send on an unclear answer.
        await self._call(
            "order_statuses_post",
            "POST",
            f"{self.cdp_url}/schema/order_statuses",
            body={"order_statuses": [dict(s) for s in statuses]},
            resend_safe=True,
        )

    async def counter_timezone(self) -> str:
        """The counter's own IANA time zone, ``time_zone_name`` (cached). Always asked of
        Metrica: ``METRICA_TIMEZONE`` is checked against it, never used instead of asking."""
        if self._timezone is None:
            outcome = await self._call(
                "counter",
                "GET",
                f"{self.api_url}/management/v1/counter/{self.counter_id}",
                resend_safe=True,
            )
            counter = outcome.body.get("counter") if isinstance(outcome.body, dict) else None
            name = counter.get("time_zone_name") if isinstance(counter, dict) else None
            if not isinstance(name, str) or not name:
                raise PermanentError(
                    "counter info has no time_zone_name", endpoint="counter", status=outcome.status
                )
            self._timezone = _check_zone(name)
        return self._timezone

    async def last_uploadings(
        self, datetime_offset: datetime | str | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """Uploads strictly before ``datetime_offset``, newest first as Metrica returns them.

        ``datetime_offset`` is an instant on the scale of the uploads' ``datetime``, which is
        UTC (``2022-12-29T18:02:01Z``): aware datetimes are rendered in UTC, never in the
        counter's time zone (getLastUploadings, docs/decisions.md)."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        params: dict[str, str] = {"limit": str(limit)}
        if isinstance(datetime_offset, datetime):
            if datetime_offset.tzinfo is None:
                raise ValueError("datetime_offset must be timezone-aware")
            params["datetime_offset"] = datetime_offset.astimezone(UTC).strftime(METRICA_DATETIME)
        elif datetime_offset is not None:
            params["datetime_offset"] = datetime_offset
        outcome = await self._call(
            "last_uploadings",
            "GET",
            f"{self.cdp_url}/last_uploadings",
            params=params,
            resend_safe=True,
        )
        items = outcome.body.get("uploadings") if isinstance(outcome.body, dict) else None
        return [u for u in items or [] if isinstance(u, dict)]

    # -- machinery ----------------------------------------------------------------------------

    async def _upload(
        self, entity: Literal["contacts", "orders"], records: Sequence[Mapping[str, Any]], mode: str
    ) -> UploadResult:
        if not records:
            raise ValueError("nothing to upload")
        content = dumps({entity: [dict(r) for r in records]})
        return await self._post_upload(entity, content, len(records), mode)

    async def _post_upload(
        self,
        entity: Literal["contacts", "orders"],
        content: bytes,
        rows: int,
        mode: str,
        *,
        paced: bool = False,
        before_send: BeforeSend | None = None,
        on_unclear: BeforeSend | None = None,
    ) -> UploadResult:
        if mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {', '.join(MERGE_MODES)}")
        outcome = await self._call(
            entity,
            "POST",
            f"{self.cdp_url}/data/{entity}/json",
            params={"merge_mode": mode},
            content=content,
            rows_sent=rows,
            resend_safe=mode in IDEMPOTENT_MODES,
            paced=paced,
            before_send=before_send,
            on_unclear=on_unclear,
        )
        assert outcome.upload is not None  # classify() guarantees it for uploads
        return outcome.upload

    async def _attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        rows_sent: int | None,
    ) -> Outcome:
        started = time.monotonic()
        try:
            response = await self._http.request(
                method,
                url,
                params=params,
                content=content,
                headers={"Content-Type": "application/json"} if content is not None else None,
            )
        except httpx.HTTPError as exc:
            return classify_exception(endpoint, exc)
        finally:
            METRICA_REQUEST_DURATION.labels(endpoint).observe(time.monotonic() - started)
        return classify(endpoint, response, rows_sent=rows_sent)

    async def _call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content: bytes | None = None,
        rows_sent: int | None = None,
        resend_safe: bool,
        paced: bool = False,
        before_send: BeforeSend | None = None,
        on_unclear: BeforeSend | None = None,
    ) -> Success:
        """One request, retried while its failures allow. ``paced``: its first attempt waits
        for the pace (uploads); retries draw on the reserve. ``before_send`` runs once the
        first attempt is admitted, and again after a daily-quota refusal (which proves nothing
        was applied), right before the request leaves. ``on_unclear`` runs after an attempt
        whose answer was unclear (a 5xx or a timeout once sent): it may have been applied."""
        if body is not None:
            content = dumps(body)
        started = time.monotonic()
        waited = 0.0  # in the governor: a wait for the quota is never a failure (DESIGN.md §5)
        attempt = 0
        fresh = True  # nothing of this request has reached Metrica yet
        while True:
            queued = time.monotonic()
            async with self.governor.request(paced=paced and fresh) as ticket:
                waited += time.monotonic() - queued
                if fresh and before_send is not None:
                    await before_send()
                fresh = False
                outcome = await self._attempt(endpoint, method, url, params, content, rows_sent)
                if isinstance(outcome, TransientError) and outcome.never_sent:
                    ticket.refund()  # no connection, nothing reached Metrica: not spent
            METRICA_REQUESTS.labels(endpoint, _result(outcome)).inc()
            if isinstance(outcome, Success):
                return outcome
            failure: MetricaError = outcome
            if isinstance(outcome, SetupError):
                raise outcome  # whoever stops sending says so (metrics.SETUP_ERROR)
            if isinstance(outcome, PermanentError):
                raise outcome
            if isinstance(outcome, ThrottledError) and outcome.daily:
                # Not a failure of this request: wait for the next quota day, however long.
                log.warning(
                    "Metrica's daily quota is spent; sending waits for the next quota day",
                    endpoint=endpoint,
                    error_type=outcome.error_type,
                    reset_at=self.governor.reset_at().isoformat(),
                )
                await self.governor.metrica_quota_spent()
                fresh = True
                continue
            attempt += 1
            if isinstance(outcome, TransientError) and outcome.unclear and on_unclear is not None:
                await on_unclear()
            if isinstance(outcome, TransientError) and outcome.unclear and not resend_safe:
                raise UnclearOutcome(
                    f"{outcome.message}; not re-sent: merge mode APPEND is not idempotent",
                    endpoint=endpoint,
                    status=outcome.status,
                    error_type=outcome.error_type,
                )
            delay = self.retry.delay(failure, attempt, self._rng)
            elapsed = time.monotonic() - started - waited
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.budget_s:
                raise RetryExhausted(failure, attempts=attempt, elapsed_s=elapsed)
            log.info(
                "metrica_retry",
                endpoint=endpoint,
                attempt=attempt,
                result=_result(outcome),
                status=outcome.status,
                error_type=outcome.error_type,
                delay_s=round(delay, 3),
            )
            await asyncio.sleep(delay)


def _result(outcome: Outcome) -> str:
    if isinstance(outcome, Success):
        return "success"
    return outcome.result_class.value


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PermanentError(
            f"unknown time zone {name!r}", endpoint="counter", error_type="invalid_time_zone"
        ) from None
    return name
