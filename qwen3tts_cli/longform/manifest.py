"""`DIR/manifest.jsonl`: one record per finished line, so a rerun of a batch list skips what is done.

A record is appended (flushed and fsynced) right after its output file was renamed into place, so a kill at
any moment leaves at worst a torn last line, which is ignored when read. Records are JSON objects:

    {"name", "output", "line", "text", "voice", "options", "model", "seed", "frames", "seconds",
     "sha256", "status": "ok", "replacements"}

Before an output is written, a `{"name", "output", "status": "writing"}` record says the file is ours, so
a rerun may replace it even when the run was killed between the rename and the final record (a file in
DIR that no record names is the user's, and is never overwritten without --force).
`options.seed` is the seed the line asked for (null: random), `seed` the one used. A line is done when the
latest record of its name has the same text, voice, options and model, and its output file still has the
recorded sha256. At the end of a run the file is rewritten compacted (latest record per name whose output
still exists), atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from qwen3tts_cli.platform_compat import replace_file

MANIFEST_NAME = "manifest.jsonl"
IDENTITY_KEYS = ("text", "voice", "options", "model")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """The records of one output folder (latest per name), and the appending handle."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        self.records: dict[str, dict[str, Any]] = read_records(self.path)

    def is_done(self, name: str, identity: dict[str, Any], output: str) -> bool:
        record = self.records.get(name)
        if record is None or record.get("status") != "ok" or record.get("output") != output:
            return False
        if any(record.get(key) != identity.get(key) for key in IDENTITY_KEYS):
            return False
        target = self.folder / output
        try:
            return target.is_file() and sha256_file(target) == record.get("sha256")
        except OSError:
            return False

    def owns(self, name: str, output: str) -> bool:
        """Whether a batch run wrote (or was writing) this output: it may be replaced."""
        record = self.records.get(name)
        return record is not None and record.get("output") == output

    def append(self, record: dict[str, Any]) -> None:
        """Add a record durably; a torn last line (a kill mid-write) is closed off first."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with open(self.path, "ab") as handle:
            if handle.tell() > 0 and not _ends_with_newline(self.path):
                handle.write(b"\n")
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["name"]] = record

    def compact(self) -> None:
        """Rewrite with the latest record per name whose output exists (temp file + rename)."""
        kept = [r for r in self.records.values() if (self.folder / str(r.get("output", ""))).is_file()]
        if not kept and not self.path.exists():
            return
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=f".{MANIFEST_NAME}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                for record in kept:
                    handle.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode())
                handle.flush()
                os.fsync(handle.fileno())
            replace_file(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """name -> latest record; unreadable lines (a torn last line) are skipped."""
    records: dict[str, dict[str, Any]] = {}
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return records
    for raw in content.split(b"\n"):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            records[record["name"]] = record
    return records
