"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every route.

Open WebUI and the `openai` client show `error.message`; a FastAPI-style `{"detail": ...}` would reach users
as "Server Connection Error". `x-should-retry: false` stops the client's automatic retries where a retry
cannot help.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from qwen3tts_cli.errors import Busy, Qwen3TTSError

# status -> OpenAI's error type
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    504: "server_error",
}
_NO_RETRY = {400, 401, 404, 405, 409, 413, 415, 422}


class APIError(Exception):
    """A request the server answers with an error status (raised anywhere in a route)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @classmethod
    def from_library(cls, exc: Qwen3TTSError, param: str | None = None) -> APIError:
        """A library error: Busy is 429 (retry later), everything else is the caller's input (400)."""
        text = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        if isinstance(exc, Busy):
            return cls(429, text, code="busy", headers={"Retry-After": "2"})
        return cls(400, text, param=param, code="invalid_value")


def error_response(exc: APIError) -> JSONResponse:
    body = {
        "error": {
            "message": exc.message,
            "type": _TYPES.get(exc.status, "server_error"),
            "param": exc.param,
            "code": exc.code,
        }
    }
    headers = dict(exc.headers)
    if exc.status in _NO_RETRY:
        headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=exc.status, headers=headers)
