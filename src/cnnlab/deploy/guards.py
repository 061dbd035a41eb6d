"""ASGI middlewares that keep the service standing against slow, stalled, hostile or departed clients.

Plain ASGI, not Starlette's ``BaseHTTPMiddleware``: that one runs the app in a task group, which
turned an over-limit chunked upload into "unhandled errors in a TaskGroup" (400) instead of 413.

- :class:`RequestGuard` reads the body for the app under limits: over ``max_body_bytes`` → 413
  (Content-Length checked first, then the stream counted, since chunked bodies have no length and
  clients may lie); no body bytes for ``read_timeout_s`` or a body still incomplete after
  ``body_timeout_s`` → 408 and the connection closed (a Content-Length larger than the body used
  to hold it forever); a client that disconnects mid-upload → one log line, no traceback.
- :class:`ApiKeyGuard`: with a key, every path but the health probes needs it (``X-API-Key``,
  ``Authorization: Bearer``, or HTTP Basic with the key as password, which is what a browser sends
  after its login prompt).
- :class:`ObserveMiddleware` counts every answer under its route template and writes the access log.

Headers that never complete are cut off below ASGI, by the server protocol
(:mod:`cnnlab.deploy.http_server`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import Match, Router

from cnnlab.deploy.metrics import UNMATCHED, Metrics

log = logging.getLogger("cnnlab.serve")
access_log = logging.getLogger("cnnlab.access")
STATUS_CLIENT_GONE = 499  # nginx's convention for "client closed the request"


class GuardError(Exception):
    """A request the guard ends itself: ``status`` and ``detail`` are what the client gets."""

    status = 400
    reason = "guard"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BodyTooLarge(GuardError):
    """413: the body is over the limit."""

    status, reason = 413, "too_large"


class ReadTimeout(GuardError):
    """408: the client stopped sending its body."""

    status, reason = 408, "read_timeout"


class ClientGone(GuardError):
    """The client disconnected before its answer; nothing can be sent."""

    status, reason = STATUS_CLIENT_GONE, "client_disconnected"


def error_body(path: str, detail: str) -> bytes:
    """JSON error body: ``{"error": …}`` on the Open Inference Protocol paths (what its clients
    read), ``{"detail": …}`` elsewhere (FastAPI's convention)."""
    key = "error" if path.startswith("/v2") else "detail"
    return json.dumps({key: detail}).encode()


async def send_error(
    send: Any, path: str, status: int, detail: str, headers: list | None = None
) -> None:
    """Answer ``status`` with a JSON error and close the connection."""
    body = error_body(path, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _notes(scope: dict) -> dict:
    """Per-request notes shared by the middlewares (the guard tells the observer what it did)."""
    return scope.setdefault("cnnlab", {})


class RequestGuard:
    """Body size limit, read timeouts and client disconnects for every HTTP request."""

    def __init__(
        self,
        app: Any,
        metrics: Metrics,
        max_body_bytes: int,
        read_timeout_s: float,
        body_timeout_s: float,
    ):
        self.app, self.metrics = app, metrics
        self.max_bytes = max_body_bytes
        self.read_timeout, self.body_timeout = read_timeout_s, body_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                self.metrics.error(BodyTooLarge.reason)
                await send_error(
                    send, path, 413, f"request body exceeds the {self.max_bytes:,}-byte limit"
                )
                return
        seen = 0
        body_done = scope.get("method") in ("GET", "HEAD") and length is None
        started = False
        deadline = time.monotonic() + self.body_timeout

        async def guarded_receive() -> dict:
            nonlocal seen, body_done
            if body_done:
                return await receive()  # after the body: only the disconnect notice is left
            wait = min(self.read_timeout, deadline - time.monotonic())
            try:
                if wait <= 0:
                    raise TimeoutError
                msg = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise ReadTimeout(
                    f"request body not received in time ({seen:,} bytes in; "
                    f"read timeout {self.read_timeout:g} s, body timeout {self.body_timeout:g} s)"
                ) from None
            if msg["type"] == "http.disconnect":
                raise ClientGone(f"client disconnected after {seen:,} body bytes")
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(f"request body exceeds the {self.max_bytes:,}-byte limit")
                body_done = not msg.get("more_body", False)
            return msg

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except (GuardError, ClientDisconnect) as exc:
            if not isinstance(exc, GuardError):
                exc = ClientGone(f"client disconnected after {seen:,} body bytes")
            self.metrics.error(exc.reason)
            if isinstance(exc, ClientGone):
                self.metrics.disconnect()
                _notes(scope)["status"] = STATUS_CLIENT_GONE
                client = scope.get("client") or ("?", 0)
                log.info("%s:%s %s %s: %s", client[0], client[1], scope["method"], path, exc)
            elif not started:
                await send_error(send, path, exc.status, exc.detail)


def _given_key(headers: dict[bytes, bytes]) -> str:
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


class ApiKeyGuard:
    """401 for every request without the key, except the public paths (health probes)."""

    def __init__(self, app: Any, api_key: str, public_paths: frozenset[str], metrics: Metrics):
        self.app, self.key, self.public, self.metrics = app, api_key.encode(), public_paths, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.public:
            await self.app(scope, receive, send)
            return
        given = _given_key(dict(scope.get("headers") or [])).encode()
        if secrets.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        self.metrics.error("unauthorized")
        await send_error(
            send,
            scope.get("path", ""),
            401,
            "missing or wrong API key (send header X-API-Key, or Authorization: Bearer KEY)",
            [(b"www-authenticate", b'Basic realm="cnnlab", charset="UTF-8"')],
        )


def route_template(router: Router, scope: dict) -> str:
    """The template of the route ``scope`` matches (``/v2/models/{name}``), else ``unmatched``."""
    partial = UNMATCHED
    for route in router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", UNMATCHED) or UNMATCHED
        if match == Match.PARTIAL and partial == UNMATCHED:  # right path, wrong method (405)
            partial = getattr(route, "path", UNMATCHED) or UNMATCHED
    return partial


class ObserveMiddleware:
    """Counts each answer under its route template and writes one access-log line per request."""

    CACHE_SIZE = 1024

    def __init__(self, app: Any, metrics: Metrics, router: Router, access: bool):
        self.app, self.metrics, self.router, self.access = app, metrics, router, access
        # (method, path) → template: matching every route's regex costs more than the rest of
        # this middleware; bounded, since clients choose the paths
        self.templates: dict[tuple[str, str], str] = {}

    def template(self, scope: dict) -> str:
        key = (scope.get("method", ""), scope.get("path", ""))
        route = self.templates.get(key)
        if route is None:
            # before the app runs: routing rewrites the scope (a mount moves the path)
            route = route_template(self.router, dict(scope))
            if len(self.templates) >= self.CACHE_SIZE:
                self.templates.clear()
            self.templates[key] = route
        return route

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, size = 0, 0
        route = self.template(scope)

        async def watching_send(msg: dict) -> None:
            nonlocal status, size
            if msg["type"] == "http.response.start":
                status = msg["status"]
            elif msg["type"] == "http.response.body":
                size += len(msg.get("body", b""))
            await send(msg)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            status = status or _notes(scope).get("status", 500)
            seconds = time.perf_counter() - t0
            self.metrics.observe(scope.get("method", ""), route, status, seconds)
            if self.access:
                client = scope.get("client") or ("?", 0)
                path = scope.get("path", "")[:200].encode("unicode_escape").decode("ascii")
                access_log.info(
                    '%s:%s "%s %s" %d %.1fms %dB',
                    client[0],
                    client[1],
                    scope.get("method", ""),
                    path,
                    status,
                    seconds * 1000,
                    size,
                )
