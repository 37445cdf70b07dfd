"""The streaming converter writes files byte-identical to the one before (tests/data/convert_hashes.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint
from tests.convert_hashes import HASHES_PATH, SEED, SIZES, convert_and_hash

REFERENCE: dict[str, dict[str, str]] = json.loads(HASHES_PATH.read_text())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", spec.MODEL_KINDS)
def test_every_quant_is_byte_identical(size: str, kind: str, tmp_path: Path) -> None:
    ckpt = build_checkpoint(tmp_path / "ckpt", kind, size, SEED)
    for quant in catalog.QUANTS:
        work = tmp_path / quant
        work.mkdir()
        assert convert_and_hash(ckpt, work, quant) == REFERENCE[f"{size}/{kind}/{quant}"], (size, kind, quant)
