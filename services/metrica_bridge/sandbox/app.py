"""HTTP layer of the sandbox (starlette): Metrica paths, inspection and fault control.

Every Metrica request goes through the same gate, in this order: the body size
(``max_request_bytes``: 413, as a fronting proxy answers, so no quota is spent), authentication
(401/403), counter (404), quota bursts and quotas (429), injected latency, injected errors (5xx),
the handler, and for writes ``apply_then_fail_rate``. Nothing before the handler touches data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from metrica_bridge.logs import get_logger
from metrica_bridge.sandbox.core import Sandbox
from metrica_bridge.sandbox.errors import ApiError, ErrorItem, error_body, server_error
from metrica_bridge.sandbox.faults import configure, describe
from metrica_bridge.sandbox.validation import parse_json

CDP = "/cdp/api/v1/counter/{counter_id}"
Handler = Callable[[Request, int], Awaitable[tuple[dict[str, Any], Any]]]

log = get_logger("metrica_bridge.sandbox")


def _error(exc: ApiError, locations: bool = True) -> JSONResponse:
    return JSONResponse(exc.body(locations), status_code=exc.status)


async def _too_large(request: Request, limit: int | None) -> bool:
    """Decided as a proxy would: from Content-Length when sent, else from the body read. A
    refused body is still drained, so the client gets to read the 413."""
    if limit is None:
        return False
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        if int(declared) <= limit:
            return False
        async for _chunk in request.stream():
            pass
        return True
    return len(await request.body()) > limit


def create_app(sandbox: Sandbox, log_requests: bool = False) -> Starlette:
    store, quotas, faults = sandbox.store, sandbox.quotas, sandbox.faults

    def metrica(
        handler: Handler, writes: bool = False, for_upload: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            response = await _gate(request, handler, writes, for_upload)
            if log_requests:
                log.info(
                    "metrica request",
                    method=request.method,
                    path=request.url.path,
                    status=response.status_code,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
            return response

        return endpoint

    async def _gate(request: Request, handler: Handler, writes: bool, for_upload: bool) -> Response:
        if await _too_large(request, faults.settings.max_request_bytes):
            return HTMLResponse(_TOO_LARGE, status_code=413)
        locations = not for_upload or faults.settings.error_locations
        try:
            token = sandbox.authenticate(request.headers.get("authorization"))
            counter_id = sandbox.counter_id(request.path_params["counter_id"])
            store.counter(counter_id)
            burst = faults.take_quota_burst()
            if burst is not None:
                quotas.note_refused(burst)
                raise ApiError.of(burst, "quota exceeded (injected)")
            client_ip = request.client.host if request.client else "unknown"
            refused = quotas.admit(token, counter_id, client_ip)
            if refused is not None:
                raise ApiError.of(refused, quotas.message(refused))
        except ApiError as exc:
            return _error(exc, locations)
        try:
            if faults.latency_s > 0:
                await asyncio.sleep(faults.latency_s)
            status = faults.error_before()
            if status is not None:
                raise server_error(status, "the backend is not available (injected)")
            payload, upload = await handler(request, counter_id)
            if writes:
                status = faults.error_after()
                if status is not None:
                    if upload is not None:
                        store.mark_answered(upload, status)
                    raise server_error(status, "the backend failed to answer (injected)")
            return JSONResponse(payload)
        except ApiError as exc:
            return _error(exc, locations)
        finally:
            quotas.release(token)

    # -- Metrica handlers ------------------------------------------------------------------

    def upload_handler(endpoint: str) -> Handler:
        async def handle(request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
            raw = await request.body()
            upload = store.upload(
                counter_id,
                endpoint,
                request.query_params.get("merge_mode"),
                raw,
                request.headers.get("content-type"),
                faults.settings.max_request_rows,
                faults.settings.invalid_as_200,
            )
            return {"uploading": upload.uploading()}, upload

        return handle

    async def post_statuses(request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        raw = await request.body()
        store.set_order_statuses(counter_id, raw, request.headers.get("content-type"))
        return {"success": True}, None

    async def get_statuses(_request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        return {"order_statuses": store.order_statuses(counter_id)}, None

    async def post_products(request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        raw = await request.body()
        store.set_products(counter_id, raw, request.headers.get("content-type"))
        return {"success": True}, None

    async def post_goal(request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        raw = await request.body()
        return {"goal": store.add_goal(counter_id, raw, request.headers.get("content-type"))}, None

    async def get_goals(_request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        return {"goals": store.goals(counter_id)}, None

    async def last_uploadings(request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        params = request.query_params
        limit_text = params.get("limit", "10")
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise ApiError.of("invalid_parameter", "limit must be an integer 1-1000", "limit")
        before: datetime | None = None
        offset = params.get("datetime_offset")
        if offset is not None:
            try:
                before = datetime.strptime(offset, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                raise ApiError.of(
                    "invalid_parameter",
                    "datetime_offset must be 'yyyy-MM-dd HH:mm:ss' (UTC)",
                    "datetime_offset",
                ) from None
        source = params.get("source")
        if source is not None and source != "API":
            raise ApiError.of("invalid_parameter", "source must be API", "source")
        return {"uploadings": store.last_uploadings(counter_id, before, int(limit_text))}, None

    async def management_counter(_request: Request, counter_id: int) -> tuple[dict[str, Any], Any]:
        return {
            "counter": {
                "id": counter_id,
                "status": "Active",
                "name": f"Sandbox counter {counter_id}",
                "site": "sandbox.local",
                "time_zone_name": store.timezone,
                "time_zone_offset": store.time_zone_offset_minutes(),
            }
        }, None

    # -- inspection and faults (no auth, no quotas) ----------------------------------------

    def inspect(read: Callable[[int], list[dict[str, Any]]], key: str) -> Any:
        async def handle(request: Request) -> Response:
            try:
                counter_id = sandbox.counter_id(request.path_params["counter_id"])
                return JSONResponse({key: read(counter_id)})
            except ApiError as exc:
                return _error(exc)

        return handle

    async def get_faults(_request: Request) -> Response:
        return JSONResponse(describe(faults, quotas))

    async def post_faults(request: Request) -> Response:
        try:
            body = parse_json(await request.body(), "application/json")
            configure(faults, quotas, body)
        except ApiError as exc:
            return _error(exc)
        return JSONResponse(describe(faults, quotas))

    async def reset(_request: Request) -> Response:
        sandbox.reset()
        return JSONResponse({"success": True})

    async def health(_request: Request) -> Response:
        return JSONResponse({"ok": True, "counters": store.counter_ids})

    async def stats(_request: Request) -> Response:
        return JSONResponse(quotas.stats())

    async def not_found(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        error_type, message = _HTTP_ERRORS.get(status, ("backend_error", "internal error"))
        return JSONResponse(
            error_body(status, [ErrorItem(error_type, message)]), status_code=status
        )

    routes = [
        Route(
            CDP + "/data/contacts/json",
            metrica(upload_handler("contacts"), writes=True, for_upload=True),
            methods=["POST"],
        ),
        Route(
            CDP + "/data/orders/json",
            metrica(upload_handler("orders"), writes=True, for_upload=True),
            methods=["POST"],
        ),
        Route(CDP + "/schema/order_statuses", metrica(post_statuses, True), methods=["POST"]),
        Route(CDP + "/schema/order_statuses", metrica(get_statuses), methods=["GET"]),
        Route(CDP + "/schema/products", metrica(post_products, True), methods=["POST"]),
        Route(CDP + "/last_uploadings", metrica(last_uploadings), methods=["GET"]),
        Route("/management/v1/counter/{counter_id}", metrica(management_counter), methods=["GET"]),
        Route(
            "/management/v1/counter/{counter_id}/goals", metrica(post_goal, True), methods=["POST"]
        ),
        Route("/management/v1/counter/{counter_id}/goals", metrica(get_goals), methods=["GET"]),
        Route("/_sandbox/counters/{counter_id}/contacts", inspect(store.contacts, "contacts")),
        Route("/_sandbox/counters/{counter_id}/orders", inspect(store.orders, "orders")),
        Route("/_sandbox/counters/{counter_id}/uploads", inspect(store.uploads, "uploads")),
        Route("/_sandbox/counters/{counter_id}/products", inspect(store.products, "products")),
        Route("/_sandbox/faults", get_faults, methods=["GET"]),
        Route("/_sandbox/faults", post_faults, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


# Not Metrica's JSON: the page a fronting proxy (nginx and the like) answers on its own.
_TOO_LARGE = "<html><body><h1>413 Request Entity Too Large</h1></body></html>"
_HTTP_ERRORS = {
    404: ("not_found", "no such endpoint in the sandbox"),
    405: ("not_acceptable", "method not allowed on this endpoint"),
}
