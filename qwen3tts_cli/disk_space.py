"""Free disk space checks: refuse a download or a conversion up front, with the numbers, not halfway."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from qwen3tts_cli.errors import Qwen3TTSError


def existing_parent(path: Path) -> Path:
    """`path` or its nearest existing parent (a folder about to be made lives on its parent's disk)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path` (or its nearest existing parent)."""
    return shutil.disk_usage(existing_parent(path)).free


def gigabytes(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.1f} MB"


def require_free_space(needs: Iterable[tuple[Path, int]], what: str, hint: str) -> None:
    """Raise when a disk has less free space than the bytes asked of it.

    `needs` are (folder, bytes) pairs; folders on the same filesystem add up, so an output folder and a
    temporary folder on one disk are checked together.
    """
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, count in needs:
        device = os.stat(existing_parent(folder)).st_dev
        first, total = by_device.get(device, (Path(folder), 0))
        by_device[device] = (first, total + count)
    for folder, total in by_device.values():
        free = free_bytes(folder)
        if free < total:
            raise Qwen3TTSError(f"{what} needs {gigabytes(total)}, {gigabytes(free)} free at {folder}", hint)
