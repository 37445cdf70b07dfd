"""What differs on Windows, in one place: renames that race other programs, process checks, locks, consoles.

Each function takes the POSIX path where it exists and falls back by capability (a missing `fcntl`, a
missing `os.pread`) or by `sys.platform` where Windows behaves differently with the same call, so the
Windows branches can be exercised on Linux by removing or faking what they look for (tests/test_windows.py).
Stdlib only, cheap to import.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

# Windows: a virus scanner, search indexer or backup tool opening a file we just wrote makes os.replace
# fail with PermissionError for a moment; a player holding the old output open makes it fail until closed.
REPLACE_RETRY_SECONDS = 2.0

_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5
_ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004
LOCK_FILE_NAME = ".qwen3tts.lock"  # Windows folder locks: msvcrt locks a byte of this file in the folder
_UTF_CODECS = frozenset({"utf-8", "utf-16", "utf-32", "utf-8-sig"})


# device names Windows gives every folder: `nul.json` or `con.wav` is the device, not a file
WINDOWS_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{d}" for p in ("com", "lpt") for d in "123456789"}
)


def is_windows() -> bool:
    return sys.platform == "win32"


def is_reserved_file_name(name: str) -> bool:
    """Whether a file name is a Windows device whatever its extension (`NUL`, `com1.wav`, `Con .json`)."""
    return name.split(".")[0].strip().lower() in WINDOWS_RESERVED_NAMES


def replace_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """`os.replace`; on Windows retried for a while when another program has `src` or `dst` open.

    After the retries the error stays a PermissionError (callers' OSError handling is unchanged) whose
    message names the cause and the fix. Elsewhere a PermissionError is a real permission problem: raised
    at once.
    """
    deadline: float | None = None
    delay = 0.02
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if not is_windows():
                raise
            now = time.monotonic()
            deadline = now + REPLACE_RETRY_SECONDS if deadline is None else deadline
            if now >= deadline:
                raise PermissionError(
                    exc.errno or errno.EACCES,
                    "another program has the file open (close it, e.g. a player or editor, and run again)",
                    os.fspath(dst),
                ) from exc
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.25)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists. On Windows `os.kill(pid, 0)` would send Ctrl-C (signal 0 is
    CTRL_C_EVENT there) to every process on our console, ourselves included, so it asks the kernel instead."""
    if is_windows():
        return _windows_pid_alive(pid, *_kernel32())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _kernel32() -> tuple[Any, Callable[[], int]]:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = ctypes.c_void_p
    kernel32.OpenProcess.argtypes = (ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong)
    kernel32.GetExitCodeProcess.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong))
    kernel32.CloseHandle.argtypes = (ctypes.c_void_p,)
    kernel32.GetConsoleMode.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong))
    kernel32.SetConsoleMode.argtypes = (ctypes.c_void_p, ctypes.c_ulong)
    return kernel32, ctypes.get_last_error  # type: ignore[attr-defined]


def _windows_pid_alive(pid: int, kernel32: Any, last_error: Callable[[], int]) -> bool:
    import ctypes

    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # access denied: it exists but is not ours; anything else (invalid parameter): no such process
        return last_error() == _ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_ulong(0)
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell: keep what might belong to a live process
        return code.value == _STILL_ACTIVE  # a handle to an exited process still opens until it is reaped
    finally:
        kernel32.CloseHandle(handle)


def stop_signals() -> list[int]:
    """The signals that ask us to stop (besides Ctrl-C's SIGINT): SIGTERM, and on Windows SIGBREAK.

    Windows never delivers SIGTERM (TerminateProcess kills outright); a console program asked to stop
    gets CTRL_BREAK_EVENT (`GenerateConsoleCtrlEvent`, what service wrappers and process managers send),
    which Python raises as SIGBREAK.
    """
    return [signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])]  # type: ignore[attr-defined]


def enable_terminal_escapes(stream: TextIO) -> bool:
    """Whether `stream` interprets ANSI escapes (the status lines' `\\x1b[K`), turning that on where needed.

    A Windows console shows them as text unless virtual-terminal processing is on for its handle (Windows
    10 and later can; Windows Terminal has it on already). POSIX terminals always interpret them.
    """
    if not is_windows():
        return True
    try:
        import msvcrt

        handle = msvcrt.get_osfhandle(stream.fileno())
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    import ctypes

    kernel32, _ = _kernel32()
    mode = ctypes.c_ulong(0)
    if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
        return False  # not a console (a pipe, a file)
    if mode.value & _ENABLE_VIRTUAL_TERMINAL_PROCESSING:
        return True
    return bool(kernel32.SetConsoleMode(handle, mode.value | _ENABLE_VIRTUAL_TERMINAL_PROCESSING))


class LockedError(Exception):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_folder_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock on `folder` (non-blocking), yielding whether one could be taken.

    POSIX: flock on the folder itself (nothing is written into it). Windows: a folder cannot be opened like
    a file, so `msvcrt.locking` locks the first byte of `.qwen3tts.lock` inside it. Neither: no lock (False).
    Raises LockedError when another process holds it.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LockedError(str(folder)) from None
            yield True
        finally:
            os.close(fd)  # closing releases the lock
        return
    try:
        import msvcrt
    except ImportError:
        yield False
        return
    with _msvcrt_lock(msvcrt, folder / LOCK_FILE_NAME):
        yield True


@contextlib.contextmanager
def _msvcrt_lock(msvcrt: Any, path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # one try, no waiting (LK_LOCK would retry for 10 s)
        except OSError:
            raise LockedError(str(path.parent)) from None
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)  # unlocking names the same region, from the current position
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # another run may hold it open by now: it stays, harmlessly
        path.unlink()


def can_encode(stream: TextIO, text: str) -> bool:
    """Whether `text` survives `stream`'s encoding (a cp1252 console cannot show Chinese, for one)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    except LookupError:
        return True
    return True


def tolerate_console_encoding(*streams: TextIO) -> list[TextIO]:
    """Make text streams that cannot encode all of Unicode replace what they cannot show, not crash.

    A Windows console or pipe in a legacy code page (cp1252, cp850...) raises UnicodeEncodeError on the
    first Chinese voice name; the encoding itself is kept (what the reader of the pipe expects), only
    unencodable characters become '?'. UTF-8 streams, and streams already told how to handle errors, are
    left alone (Python gives stderr 'backslashreplace'). Returns the streams that were changed.
    """
    changed = []
    for stream in streams:
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = getattr(stream, "encoding", None)
        if reconfigure is None or not encoding or getattr(stream, "errors", "strict") != "strict":
            continue
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            continue
        if name in _UTF_CODECS:
            continue
        reconfigure(errors="replace")
        changed.append(stream)
    return changed
