"""Simulate the parts of Windows the code branches on, on Linux, in-process or around a real CLI run.

    python tests/windows_sim.py nofcntl,msvcrt,sigbreak -- say ...   # the CLI with those simulated

* `nofcntl`: `import fcntl` fails (sys.modules["fcntl"] = None), as on Windows.
* `msvcrt`: a `msvcrt` module whose `locking` behaves like the real one (byte-range lock from the file's
  current position, LK_NBLCK fails at once with OSError when another process holds it), built on POSIX
  record locks taken before `fcntl` is hidden.
* `nopread`: no os.pread, os.sendfile, os.posix_fadvise (Windows has none of them).

Checks of `sys.platform` are simulated by patching `platform_compat.is_windows` instead: setting
`sys.platform` itself sends libraries (soundfile, sysconfig) down Windows-only paths that cannot work here.
* `sigbreak`: signal.SIGBREAK exists; SIGUSR1 stands in for it so a test can deliver it (os.kill).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import types
from typing import Any

LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4  # the values of Windows' msvcrt
HANDLE_BASE = 1000  # fake Win32 handle of descriptor fd: HANDLE_BASE + fd
NO_PREAD_NAMES = ("pread", "sendfile", "posix_fadvise")


def fake_msvcrt() -> types.ModuleType:
    import fcntl  # captured now: the simulation hides it from everyone else

    module = types.ModuleType("msvcrt")
    module.LK_UNLCK, module.LK_LOCK, module.LK_NBLCK = LK_UNLCK, LK_LOCK, LK_NBLCK  # type: ignore[attr-defined]
    module.LK_RLCK, module.LK_NBRLCK = LK_RLCK, LK_NBRLCK  # type: ignore[attr-defined]
    # POSIX record locks do not conflict within one process; Windows locks do (per handle): keep our own
    held: dict[tuple[int, int, int, int], int] = {}  # (device, inode, start, length) -> fd holding it

    def locking(fd: int, mode: int, nbytes: int) -> None:
        start = os.lseek(fd, 0, os.SEEK_CUR)
        info = os.fstat(fd)
        region = (info.st_dev, info.st_ino, start, nbytes)
        if mode == LK_UNLCK:
            if held.get(region) != fd:  # Windows refuses to unlock a region this handle has not locked
                raise OSError(errno.EACCES, "Permission denied")
            fcntl.lockf(fd, fcntl.LOCK_UN, nbytes, start, os.SEEK_SET)
            del held[region]
            return
        if mode not in (LK_NBLCK, LK_NBRLCK):
            raise NotImplementedError("the simulation knows only the non-blocking locks")
        try:
            if region in held:
                raise OSError
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, nbytes, start, os.SEEK_SET)
        except OSError:
            raise OSError(errno.EDEADLK, "Resource deadlock avoided") from None  # what msvcrt raises
        held[region] = fd

    def get_osfhandle(fd: int) -> int:
        os.fstat(fd)  # OSError for a closed descriptor, as the real one
        return HANDLE_BASE + fd

    module.locking = locking  # type: ignore[attr-defined]
    module.get_osfhandle = get_osfhandle  # type: ignore[attr-defined]
    module.held = held  # type: ignore[attr-defined]  # for tests: which regions are locked now
    return module


def apply(features: set[str], setitem: Any = None, delattr_: Any = None) -> None:
    """Switch the simulated features on (with a pytest MonkeyPatch's setitem/delattr they are undone)."""
    setitem = setitem or (lambda mapping, key, value: mapping.__setitem__(key, value))
    delattr_ = delattr_ or (lambda obj, name: delattr(obj, name))
    unknown = features - {"nofcntl", "msvcrt", "nopread", "sigbreak"}
    if unknown:
        raise SystemExit(f"unknown simulated features: {sorted(unknown)}")
    if "msvcrt" in features:
        setitem(sys.modules, "msvcrt", fake_msvcrt())
    if "nofcntl" in features:
        setitem(sys.modules, "fcntl", None)
    if "nopread" in features:
        for name in NO_PREAD_NAMES:
            if hasattr(os, name):
                delattr_(os, name)
        setitem(vars(shutil), "_USE_CP_SENDFILE", False)  # shutil decided at import to use os.sendfile
    if "sigbreak" in features:
        setitem(vars(signal), "SIGBREAK", signal.SIGUSR1)


def main(argv: list[str]) -> None:
    features, separator, *args = argv
    assert separator == "--", "usage: windows_sim.py FEATURES -- CLI ARGS"
    apply({f for f in features.split(",") if f})
    from qwen3tts_cli.cli.app import run

    sys.exit(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
