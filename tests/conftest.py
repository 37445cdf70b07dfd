"""Shared pytest helpers: golden-file loading and session-wide seeded fixture checkpoints.

* `golden` — a `GoldenStore` over tests/golden/ (layout: tests/golden/README.md).
* `checkpoint_factory(kind, size="tiny", seed=None)` — builds a fixture checkpoint once per session and
  returns its folder; seed None means "the seed the committed goldens were made with".
* `tiny_checkpoints` / `tiny_wide_checkpoints` — {kind: folder} for all three kinds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

GOLDEN_DIR = Path(__file__).parent / "golden"
DATA_DIR = Path(__file__).parent / "data"
DEFAULT_SEED = 0


class GoldenStore:
    """Read-only access to tests/golden/<size>/... ; npz files come back as plain dicts of arrays."""

    def __init__(self, root: Path = GOLDEN_DIR) -> None:
        self.root = root

    def path(self, size: str, *parts: str) -> Path:
        path = self.root.joinpath(size, *parts)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} missing: run tests/parity/make_goldens.py (see tests/golden/README.md)"
            )
        return path

    def npz(self, size: str, *parts: str) -> dict[str, np.ndarray]:
        with np.load(self.path(size, *parts)) as data:
            return {name: data[name] for name in data.files}

    def case(self, size: str, name: str) -> dict[str, np.ndarray]:
        """One official generate_* call, e.g. case("tiny", "cv_english")."""
        return self.npz(size, f"{name}.npz")

    def component(self, name: str, size: str = "tiny") -> dict[str, np.ndarray]:
        """decoder_37 / decoder_340 / encoder (tiny only: the codec is shared) or speaker (every size)."""
        return self.npz(size, "components", f"{name}.npz")

    def fixture(self, size: str) -> dict[str, Any]:
        return json.loads(self.path(size, "fixture.json").read_text(encoding="utf-8"))

    def ref_audio(self, size: str = "tiny") -> np.ndarray:
        return self.npz(size, "ref_audio.npz")["wav"]

    def sizes(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/fixture.json"))

    def cases(self, size: str) -> list[str]:
        return list(self.fixture(size)["cases"])

    def seed(self, size: str, kind: str) -> int:
        return int(self.fixture(size)["checkpoints"][kind]["seed"])


@pytest.fixture(scope="session")
def golden() -> GoldenStore:
    return GoldenStore()


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session and arguments) a seeded fixture checkpoint; returns its folder."""
    built: dict[tuple[str, str, int], Path] = {}
    store = GoldenStore()

    def make(kind: str, size: str = "tiny", seed: int | None = None) -> Path:
        if seed is None:
            has_golden = (store.root / size / "fixture.json").is_file()
            seed = store.seed(size, kind) if has_golden else DEFAULT_SEED
        key = (kind, size, seed)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"ckpt-{size}-{kind}-{seed}")
            built[key] = build_checkpoint(folder, kind, size, seed)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoints(checkpoint_factory: Callable[..., Path]) -> dict[str, Path]:
    return {kind: checkpoint_factory(kind, "tiny") for kind in spec.MODEL_KINDS}


@pytest.fixture(scope="session")
def tiny_wide_checkpoints(checkpoint_factory: Callable[..., Path]) -> dict[str, Path]:
    return {kind: checkpoint_factory(kind, "tiny-wide") for kind in spec.MODEL_KINDS}
