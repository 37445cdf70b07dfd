"""sha256 of every file the converter writes, per fixture checkpoint and quant (the byte-identity reference).

`tests/data/convert_hashes.json` was written by `python tests/convert_hashes.py` with the converter as it
was before the bounded-memory rewrite (issue 13), and is never regenerated: `test_convert_identity.py`
converts the same seeded fixtures again and compares. manifest.json is left out (it holds a timestamp);
its file list is the same sha256s.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HASHES_PATH = Path(__file__).parent / "data" / "convert_hashes.json"
SIZES = ("tiny", "tiny-wide")
SEED = 7


def output_hashes(folder: Path) -> dict[str, str]:
    from qwen3tts_cli.convert.manifest import MANIFEST_NAME, sha256_file

    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def convert_and_hash(checkpoint: Path, work: Path, quant: str) -> dict[str, str]:
    from qwen3tts_cli.convert.converter import convert_checkpoint

    out = convert_checkpoint(checkpoint, work / f"out-{quant}", quant, threads=1)
    return output_hashes(out)


def main() -> None:
    from qwen3tts_cli import catalog, spec
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    table: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            for kind in spec.MODEL_KINDS:
                ckpt = build_checkpoint(Path(tmp) / f"ckpt-{size}-{kind}", kind, size, SEED)
                for quant in catalog.QUANTS:
                    work = Path(tmp) / f"conv-{size}-{kind}-{quant}"
                    work.mkdir()
                    table[f"{size}/{kind}/{quant}"] = convert_and_hash(ckpt, work, quant)
                    print(size, kind, quant, file=sys.stderr)
    HASHES_PATH.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
