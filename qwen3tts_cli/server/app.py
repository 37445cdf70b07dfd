"""The Starlette app: routes, the OpenAI error shape everywhere, request ids, API key, metrics, CORS.

Starlette on uvicorn rather than FastAPI: FastAPI's validation answers `{"detail": ...}`, which Open WebUI
cannot show, so its validation would be overridden anyway; Starlette keeps the dependencies small and
leaves full control of the error shape and of streaming. Cross-cutting concerns are plain ASGI middlewares,
which do not buffer streamed bodies: `_Gate` (outermost: request ids, metrics, internal errors), then CORS
(only with --cors-origin), then `_ApiKey` (only with --api-key).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3tts_cli.server.errors import APIError, error_response
from qwen3tts_cli.server.metrics import Metrics
from qwen3tts_cli.server.openai_api import SpeechRoutes
from qwen3tts_cli.server.service_api import ServiceRoutes
from qwen3tts_cli.server.synthesis import ServerSettings, Synthesizer
from qwen3tts_cli.tts import TTS

log = logging.getLogger("qwen3tts.server")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_PATHS = ("/health", "/metrics")  # monitoring works without the key
# metric labels: known routes by their template, everything else as one label (no unbounded cardinality)
ROUTE_LABELS = (
    ("/v1/audio/voices/", "/v1/audio/voices/{id}"),
    ("/v1/models/", "/v1/models/{id}"),
)
KNOWN_ROUTES = frozenset(
    [
        "/v1/audio/speech",
        "/v1/models",
        "/v1/audio/models",
        "/v1/audio/voices",
        "/health",
        "/tts",
        "/stream-tts",
        "/metrics",
    ]
)


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    for prefix, label in ROUTE_LABELS:
        if path.startswith(prefix):
            return label
    return "other"


class _Gate:
    """The outermost layer: a request id on every response (CORS preflights and 500s included), request
    counts and in-flight, internal errors answered in the OpenAI shape, shutdown cancellations."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        label = route_label(scope["path"])
        status: list[int] = [500]
        started = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # only uvicorn cancels a whole request task: at shutdown, once --shutdown-timeout has passed
            # (the app's own cancel scopes, e.g. for a client that left, end inside it). The synthesis was
            # cancelled on the way out; the connection is closed (a cut body). One line, not uvicorn's
            # traceback of the cancellation.
            if not started[0]:
                status[0] = 503
            log.warning(
                "%s %s (request %s) cancelled: the shutdown timeout passed",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
        except Exception as exc:
            if started[0]:  # mid-response: uvicorn logs it and closes the connection (the body is cut)
                raise
            # here rather than in Starlette's outermost handler, so the 500 carries the request id (and
            # the traceback is logged once, never sent)
            _log_internal(scope, request_id, exc)
            await error_response(_internal(request_id))(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(label, str(status[0])).inc()


class _ApiKey:
    """`Authorization: Bearer KEY` on every route but /health and /metrics (inside CORS, so that a browser
    sees the 401 with CORS headers instead of an opaque CORS failure)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._refused(scope):
            error = APIError(
                401,
                "a valid API key is required (Authorization: Bearer <key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope) -> bool:
        if scope["path"] in OPEN_PATHS or scope.get("method") == "OPTIONS":
            return False
        scheme, _, token = _header(scope, b"authorization").partition(" ")
        return scheme.lower() != "bearer" or not _same(token.strip(), self.key)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _same(given: str, expected: str) -> bool:
    import hmac

    return hmac.compare_digest(given.encode(), expected.encode())


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})))


def _internal(request_id: str) -> APIError:
    return APIError(500, f"internal server error (request id {request_id}; the server log has the details)")


def _log_internal(scope: Scope, request_id: str, exc: BaseException) -> None:
    log.error(
        "internal error in %s %s (request %s)",
        scope.get("method"),
        scope.get("path"),
        request_id,
        exc_info=exc,
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    """The last resort (the gate answers errors first; this only runs if the gate itself failed)."""
    request_id = getattr(request.state, "request_id", "?")
    _log_internal(request.scope, request_id, exc)
    return error_response(_internal(request_id))


def create_app(tts: TTS, settings: ServerSettings) -> Starlette:
    """The HTTP app over one loaded model (the caller owns `tts` and closes it after the server)."""
    metrics = Metrics(tts.stats)
    synthesizer = Synthesizer(tts, settings, metrics)
    speech = SpeechRoutes(synthesizer)
    service = ServiceRoutes(speech, metrics)
    middleware = [Middleware(_Gate, metrics=metrics)]
    if settings.cors_origins:  # inside the gate (request ids on preflights), outside the key check
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
            )
        )
    if settings.api_key:
        middleware.append(Middleware(_ApiKey, key=settings.api_key))
    app = Starlette(
        routes=[*speech.routes(), *service.routes()],
        middleware=middleware,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.metrics = metrics
    return app
