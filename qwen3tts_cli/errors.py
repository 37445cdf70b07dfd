"""The one error type users can cause: a message that names the problem and a hint that names the fix."""

from __future__ import annotations


class Qwen3TTSError(Exception):
    """A problem the user can fix. The CLI prints `error: <message> (<hint>)` and exits non-zero."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Busy(Qwen3TTSError):
    """Too many requests are waiting for the shared batch; retrying later can succeed (HTTP 429)."""
