"""`models verify` and `models gc`: check every cached model against its manifest; find what can go.

Garbage is only what no running process can be using: temp folders of conversions whose process is gone,
downloads untouched for an hour (an active download writes constantly), folders made by another converter
version (this qwen3tts can never load them), and visible folders without a manifest (never finished).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from qwen3tts_cli import catalog, hub, hub_repos
from qwen3tts_cli.convert.manifest import Manifest
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import pid_alive

_TMP_MARKS = (".tmp-", ".old-")  # the converter's temp and replaced folders: `.<quant>.tmp-<pid>`


@dataclass(frozen=True)
class Checked:
    model: hub.CachedModel
    bad_files: list[str]  # missing, wrong size or wrong sha256
    problem: str | None  # the folder as a whole (no manifest, other converter version)

    @property
    def ok(self) -> bool:
        return not self.bad_files and self.problem is None


@dataclass(frozen=True)
class Garbage:
    path: Path
    size_bytes: int
    reason: str


# ---- verify -----------------------------------------------------------------------------------------------
def _matches(model: hub.CachedModel, name: str) -> bool:
    if hub_repos.is_ref(name):
        ref = hub_repos.parse_ref(name)
        explicit_quant = name.rsplit(":", 1)[-1] in catalog.QUANTS
        return model.name == hub_repos.HF_PREFIX + ref.repo and (
            not explicit_quant or model.quant == ref.quant
        )
    entry = catalog.find(name)
    return model.name == (entry.name if entry else name)


def verify_cached(name: str | None = None, cache: str | Path | None = None) -> list[Checked]:
    """Full sha256 check of every cached model (or those of `name`: catalog name, hf: reference, folder)."""
    if name is not None and Path(name).expanduser().is_dir() and not hub_repos.is_ref(name):
        folder = Path(name).expanduser().absolute()
        models = [hub.CachedModel(str(folder), folder.name, folder, 0, hub.is_converted(folder))]
    else:
        models = [m for m in hub.list_models(cache) if name is None or _matches(m, name)]
        if name is not None and not models:
            raise Qwen3TTSError(f"model {name} is not in the cache", "see `qwen3tts models list`")
    return [_check(model) for model in models]


def _check(model: hub.CachedModel) -> Checked:
    if not model.complete:
        return Checked(model, [], "unfinished: no manifest.json")
    try:
        manifest = Manifest.read(model.path)
    except Qwen3TTSError as exc:
        return Checked(model, [], exc.message)
    if problem := hub_repos.compatibility_problem(manifest):
        return Checked(model, [], f"made by {problem}")
    return Checked(model, hub_repos.bad_files(model.path, manifest), None)


# ---- gc ---------------------------------------------------------------------------------------------------
def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*") if not p.is_symlink())]
    return max(times)


def _dead_temp(path: Path) -> bool:
    for mark in _TMP_MARKS:
        if mark in path.name:
            pid = path.name.rsplit(mark, 1)[-1]
            return not pid.isdigit() or not pid_alive(int(pid))
    return False


def find_garbage(
    cache: str | Path | None = None, *, max_age: float = hub.ABANDONED_PARTIAL_SECONDS
) -> list[Garbage]:
    """What `models gc` would remove, with sizes and reasons (nothing is removed here)."""
    root = hub.cache_root(cache)
    now = time.time()
    found: list[Garbage] = []
    for group in ("models", "local", "hub"):
        parents = [p for p in (root / group).iterdir() if p.is_dir()] if (root / group).is_dir() else []
        for parent in sorted(parents):
            for child in sorted(parent.iterdir()):
                reason = _folder_reason(child, now, max_age)
                if reason is not None:
                    found.append(Garbage(child, _size(child), reason))
    hf = hub.hf_cache_dir()
    for partial in sorted(hf.glob("models--*/blobs/*.incomplete")) if hf.is_dir() else []:
        if now - partial.stat().st_mtime > max_age:
            found.append(Garbage(partial, _size(partial), "unfinished download (Hugging Face cache)"))
    return found


def _folder_reason(child: Path, now: float, max_age: float) -> str | None:
    if not child.is_dir():
        return None
    if child.name.startswith("."):
        if _dead_temp(child):
            return "temporary folder of a conversion that did not finish"
        if child.name == hub_repos.STAGING_NAME and now - _newest_mtime(child) > max_age:
            return "unfinished download of a converted repo"
        return None
    if not hub.is_converted(child):
        return "unfinished folder (no manifest.json)" if now - _newest_mtime(child) > max_age else None
    try:
        manifest = Manifest.read(child)
    except Qwen3TTSError:
        return "unreadable manifest.json"
    if hub_repos.compatibility_problem(manifest):
        version = manifest.converter_version
        return f"made by converter version {version} (this one reads {hub_repos.CONVERTER_VERSION})"
    return None


def collect(garbage: list[Garbage]) -> int:
    """Remove what `find_garbage` listed; returns the bytes freed."""
    freed = 0
    for item in garbage:
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        if not item.path.exists():
            freed += item.size_bytes
    return freed
