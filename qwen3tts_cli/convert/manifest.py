"""manifest.json of a converted model: where it came from, how it was made, and a checksum of every file."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qwen3tts_cli.errors import Qwen3TTSError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# Bump when converted files change meaning, so caches made by an older converter are rebuilt.
# 2: 8-bit predictor heads in tables.safetensors
# 3: unfolded codec decoder codebooks (-33 MB)
# (not bumped for additions that older folders can do without, e.g. the 8-bit 1.7B input projection:
# such folders keep working and `models pull --force` rebuilds them)
CONVERTER_VERSION = "3"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    kind: str
    size_tag: str
    quant: str
    codec_precision: str
    source_repo: str | None = None
    source_revision: str | None = None
    converter_version: str = CONVERTER_VERSION
    format: int = MANIFEST_FORMAT
    created: str = ""
    talker_hidden: int = 0
    predictor_hidden: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record_files(self, folder: Path) -> None:
        """Checksum every file in `folder` (except the manifest itself)."""
        self.files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
            rel = path.relative_to(folder).as_posix()
            self.files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}

    def write(self, folder: Path) -> None:
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (folder / MANIFEST_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise Qwen3TTSError(
                f"{folder} has no {MANIFEST_NAME}: it is not a converted model"
                " (or its conversion never finished)",
                "convert it again with scripts/convert_gguf.py",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise Qwen3TTSError(f"{path} is unreadable: {exc}", "convert the model again") from exc


def verify(folder: Path, *, checksums: bool = True) -> Manifest:
    """Check that every file the manifest lists exists with its size (and sha256 when `checksums`)."""
    manifest = Manifest.read(folder)
    if manifest.format != MANIFEST_FORMAT or manifest.converter_version != CONVERTER_VERSION:
        raise Qwen3TTSError(
            f"{folder} was converted by another converter version ({manifest.converter_version})",
            "convert it again with this version",
        )
    for rel, info in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            raise Qwen3TTSError(f"{folder} is incomplete: {rel} is missing", "convert the model again")
        if path.stat().st_size != info["bytes"]:
            raise Qwen3TTSError(
                f"{folder}/{rel} has the wrong size (damaged file)", "convert the model again"
            )
        if checksums and sha256_file(path) != info["sha256"]:
            raise Qwen3TTSError(
                f"{folder}/{rel} fails its sha256 check (damaged file)", "convert the model again"
            )
    return manifest
