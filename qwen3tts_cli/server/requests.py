"""Reading request bodies within limits, before anything is parsed or written to disk."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive

from qwen3tts_cli.server.errors import APIError


def _too_large(limit: int) -> APIError:
    size = f"{limit // (1 << 20)} MB" if limit >= 1 << 20 else f"{limit // 1024} kB"
    return APIError(413, f"the request body is larger than this server's limit of {size}", code="too_large")


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as Content-Length or the bytes read pass `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, "invalid Content-Length header", code="invalid_body")
        if int(declared) > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body; malformed JSON or another type is a 400 in OpenAI's shape."""
    body = await read_limited(request, limit)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(document, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    return document


def replay(body: bytes) -> Receive:
    """An ASGI receive that hands out an already-read body (to parse it as a form)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
