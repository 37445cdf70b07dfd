"""Model folders on this machine: download official checkpoints, convert them once, cache, lock, verify.

Cache layout (root = argument, else $QWEN3TTS_CACHE, else $QWEN3TTS_HOME, else the platform cache dir):
    <root>/models/<name>/<quant>/          converted catalog models (manifest.json marks a finished one)
    <root>/local/<folder>-<key>/<quant>/   local checkpoint folders, converted; key = path, sizes, mtimes
    <root>/hub/<owner>--<name>/<quant>/    quants of converted repos (`hf:OWNER/NAME`), see hub_repos.py
    <root>/locks/                          one lock file per converted folder
A catalog model comes from its converted repo when one is configured (verified, then stored as above),
else from its official checkpoint, converted here. Official downloads stay in the Hugging Face cache
($HF_HUB_CACHE, $HF_HOME/hub), so other tools share them. origin.json in a folder says which it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout
from platformdirs import user_cache_dir

from qwen3tts_cli import catalog, hub_repos
from qwen3tts_cli.catalog import Capabilities, ModelEntry
from qwen3tts_cli.convert.manifest import MANIFEST_NAME, Manifest, verify
from qwen3tts_cli.errors import Qwen3TTSError

# Exactly the files the converter reads: no README, no ModelScope metadata, nothing else.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
]
# Files whose size and mtime identify the content of a local checkpoint folder.
_CHECKPOINT_KEY_FILES = (
    "config.json",
    "model.safetensors",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
)
CACHE_ENV_VARS = ("QWEN3TTS_CACHE", "QWEN3TTS_HOME")
# A partial download untouched for this long belongs to a killed process: an active one writes constantly.
ABANDONED_PARTIAL_SECONDS = 3600.0
_TRUE_WORDS = {"1", "on", "yes", "true"}

Progress = Callable[[str], None]


class Converter(Protocol):
    """The signature of `qwen3tts_cli.convert.converter.convert_checkpoint` that this module relies on."""

    def __call__(
        self,
        src: Path,
        dst: Path,
        quant: str,
        *,
        source_repo: str | None,
        source_revision: str | None,
        overwrite: bool,
        progress: Progress | None,
    ) -> Path: ...


@dataclass(frozen=True)
class ResolvedModel:
    """A converted model folder ready to load."""

    path: Path
    manifest: Manifest
    entry: ModelEntry | None  # None when the model was given as a folder or an hf: reference
    # "catalog", "checkpoint" (local official folder, converted into the cache), "converted" (a converted
    # folder given as is) or "downloaded" (an hf: reference to a converted repo)
    origin: str

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(self.manifest.kind, self.manifest.size_tag)


@dataclass(frozen=True)
class CachedModel:
    """One folder in the cache."""

    name: str  # catalog name, or "local/<folder>-<key>"
    quant: str
    path: Path
    size_bytes: int
    complete: bool  # has its manifest (a conversion that finished)
    origin: str = "converted here"  # or "downloaded converted (OWNER/NAME@REV)"


# ---- places -------------------------------------------------------------------------------------------
def cache_root(cache: str | Path | None = None) -> Path:
    """Where converted models live: the argument, else $QWEN3TTS_CACHE, $QWEN3TTS_HOME, the platform cache."""
    if cache is not None:
        return Path(cache).expanduser().absolute()
    for var in CACHE_ENV_VARS:
        if value := os.environ.get(var):
            return Path(value).expanduser().absolute()
    return Path(user_cache_dir("qwen3tts"))


def model_dir(name: str, quant: str = catalog.DEFAULT_QUANT, cache: str | Path | None = None) -> Path:
    """The folder of catalog model `name` at `quant` (whether or not it exists yet)."""
    entry = catalog.get(name)
    return cache_root(cache) / "models" / entry.name / catalog.check_quant(quant)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (as huggingface-hub reads it)."""
    if value := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(value).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network access."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE_WORDS


def _hf_repo_folder(repo: str) -> Path:
    return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


def _lock_path(root: Path, key: str) -> Path:
    return root / "locks" / f"{key}.lock"


# ---- checks ---------------------------------------------------------------------------------------------
def is_converted(folder: Path) -> bool:
    """A finished conversion (the converter writes the manifest last and renames the folder into place)."""
    return (folder / MANIFEST_NAME).is_file()


def verify_model(folder: str | Path) -> Manifest:
    """Full check of a converted folder: every file's size and sha256 against its manifest."""
    return verify(Path(folder), checksums=True)


def _usable(folder: Path, quant: str, say: Progress) -> Manifest | None:
    """The manifest of a cached conversion that passes the cheap size check, else None (rebuild it)."""
    if not is_converted(folder):
        return None
    if hub_repos.read_origin(folder).get("origin") == hub_repos.ORIGIN_DOWNLOADED:
        manifest = hub_repos.cached_manifest(folder, say)  # verified and unchanged since, or fetch again
        return manifest if manifest is not None and manifest.quant == quant else None
    try:
        manifest = verify(folder, checksums=False)
    except Qwen3TTSError as problem:
        say(f"cached model {folder} is unusable ({problem.message}); rebuilding it")
        return None
    if manifest.quant != quant:
        say(f"cached model {folder} holds {manifest.quant}, not {quant}; rebuilding it")
        return None
    return manifest


# ---- locking -------------------------------------------------------------------------------------------
@contextmanager
def _exclusive(lock_path: Path, what: str, say: Progress) -> Iterator[None]:
    """Hold the lock of one cache folder; a second process waits here and then finds the folder done."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another qwen3tts process that is preparing {what}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ---- download ------------------------------------------------------------------------------------------
def _remove_abandoned_partials(repo_folder: Path, max_age: float = ABANDONED_PARTIAL_SECONDS) -> None:
    """Delete partial blobs of killed downloads (huggingface-hub 2.x names them per process: never reused)."""
    now = time.time()
    for partial in repo_folder.glob("blobs/*.incomplete"):
        try:
            if now - partial.stat().st_mtime > max_age:
                partial.unlink()
        except OSError:
            pass  # another process finished or removed it meanwhile


def _download_error(exc: Exception, name: str, repo: str, offline: bool) -> Qwen3TTSError:
    from huggingface_hub.utils import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_repos.endpoint_url()
    if isinstance(exc, LocalEntryNotFoundError) and offline:
        return Qwen3TTSError(
            f"model {name} ({repo}) is not downloaded yet and downloads are disabled (HF_HUB_OFFLINE)",
            f"run `qwen3tts models pull {name}` with network access once, or unset HF_HUB_OFFLINE",
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return Qwen3TTSError(
            f"cannot reach {endpoint} to download model {name} ({repo}) and it is not in the cache",
            "check the network connection, or set HF_ENDPOINT to a reachable mirror",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return Qwen3TTSError(
            f"{endpoint} has no repository {repo} (model {name})",
            "check HF_ENDPOINT (a mirror must carry the official Qwen repos) and your access token",
        )
    if isinstance(exc, RevisionNotFoundError):
        return Qwen3TTSError(f"{repo} has no such revision", "use a branch, tag or commit that exists")
    if isinstance(exc, HfHubHTTPError):
        return Qwen3TTSError(f"downloading {repo} from {endpoint} failed: {exc}", "try again later")
    return Qwen3TTSError(
        f"downloading {repo} from {endpoint} failed: {type(exc).__name__}: {exc}",
        "run the command again: finished files are kept, the rest is fetched again",
    )


def _check_checkpoint_space(repo: str, revision: str | None) -> None:
    """Refuse before downloading when the files still missing from the cache do not fit on its disk."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        commit = api.model_info(repo, revision=revision).sha
        snapshot = _hf_repo_folder(repo) / "snapshots" / str(commit)
        missing = sum(
            item.size or 0
            for item in api.list_repo_tree(repo, revision=commit, recursive=True)
            if getattr(item, "size", None) is not None
            and any(fnmatch(item.path, pattern) for pattern in ALLOW_PATTERNS)
            and not (snapshot / item.path).is_file()
        )
    except Exception:  # no sizes (no network, no repo): the download itself reports that clearly
        return
    hub_repos.check_free_space(hf_cache_dir(), missing, f"downloading {repo}")


def download_checkpoint(
    name: str, *, revision: str | None = None, offline: bool | None = None, progress: Progress | None = None
) -> tuple[Path, str]:
    """Fetch the files the converter needs for catalog model `name`; returns (folder, commit hash).

    Honours HF_ENDPOINT, HF_HOME/HF_HUB_CACHE and HF_HUB_OFFLINE; files already in the Hugging Face cache
    are not fetched again.
    """
    from huggingface_hub import snapshot_download

    entry = catalog.get(name)
    say = progress or (lambda _msg: None)
    offline = offline_mode() if offline is None else offline
    _remove_abandoned_partials(_hf_repo_folder(entry.repo))
    try:
        if not offline:
            _check_checkpoint_space(entry.repo, revision)
            say(f"downloading {entry.repo} (only the files the converter needs)")
        folder = snapshot_download(
            entry.repo,
            revision=revision,
            cache_dir=str(hf_cache_dir()),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=offline,
        )
    except Qwen3TTSError:
        raise
    except Exception as exc:  # every network/hub failure becomes one clear user error
        raise _download_error(exc, entry.name, entry.repo, offline) from exc
    path = Path(folder)
    return path, path.name  # the snapshot folder is named by its commit hash


# ---- conversion into the cache ---------------------------------------------------------------------------
def _default_converter() -> Converter:
    from qwen3tts_cli.convert.converter import convert_checkpoint

    return convert_checkpoint


SourceFactory = Callable[[], tuple[Path, str | None, str | None]]  # -> (checkpoint folder, repo, revision)


def _ensure_converted(
    dst: Path,
    lock_path: Path,
    quant: str,
    source: SourceFactory,
    *,
    force: bool,
    convert: Converter | None,
    say: Progress,
) -> Manifest:
    """The manifest of `dst`, converting it first (once, under its lock) when it is missing or damaged."""
    if not force and (manifest := _usable(dst, quant, say)) is not None:
        return manifest
    with _exclusive(lock_path, str(dst), say):
        # Another process may have finished the same work while this one waited for the lock.
        if not force and (manifest := _usable(dst, quant, say)) is not None:
            return manifest
        src, repo, revision = source()
        dst.parent.mkdir(parents=True, exist_ok=True)
        say(f"converting {src} -> {dst} ({quant})")
        (convert or _default_converter())(
            src,
            dst,
            quant,
            source_repo=repo,
            source_revision=revision,
            overwrite=dst.exists(),
            progress=say,
        )
        say("verifying checksums")
        manifest = verify(dst, checksums=True)
        hub_repos.write_origin(dst, hub_repos.ORIGIN_CONVERTED, source_repo=repo, source_revision=revision)
        return manifest


def _pull(
    entry: ModelEntry,
    quant: str,
    *,
    cache: str | Path | None,
    revision: str | None,
    offline: bool | None,
    force: bool,
    convert: Converter | None,
    say: Progress,
    convert_locally: bool = False,
    token: str | None = None,
) -> tuple[Path, Manifest]:
    root = cache_root(cache)
    dst = model_dir(entry.name, quant, root)
    lock_path = _lock_path(root, f"{entry.name}-{quant}")
    offline = offline_mode() if offline is None else offline
    converted_repo = None if convert_locally else catalog.converted_repo(entry)
    if converted_repo and (force or _usable(dst, quant, say) is None):
        try:
            with _exclusive(lock_path, str(dst), say):
                manifest = hub_repos.pull_converted(
                    converted_repo, quant, dst, token=token, offline=offline, force=force, say=say
                )
            return dst, manifest
        except Qwen3TTSError as problem:  # the official checkpoint is always the fallback
            say(f"converted repo {converted_repo} not used ({problem.message}); converting {entry.repo} here")

    def source() -> tuple[Path, str | None, str | None]:
        folder, commit = download_checkpoint(entry.name, revision=revision, offline=offline, progress=say)
        return folder, entry.repo, commit

    manifest = _ensure_converted(dst, lock_path, quant, source, force=force, convert=convert, say=say)
    return dst, manifest


def pull_model(
    name: str,
    quant: str = catalog.DEFAULT_QUANT,
    *,
    cache: str | Path | None = None,
    revision: str | None = None,
    offline: bool | None = None,
    force: bool = False,
    progress: Progress | None = None,
    convert: Converter | None = None,
    convert_locally: bool = False,
    token: str | None = None,
) -> Path:
    """Download (if needed) and convert catalog model `name` into the cache; returns its folder.

    `name` may also be `hf:OWNER/NAME[@REVISION][:QUANT]` (a converted repo: downloaded and verified).
    `force` rebuilds the conversion even when a usable one exists. `convert` replaces the converter (tests).
    `convert_locally` ignores a converted repo named by the catalog.
    """
    say = progress or (lambda _msg: None)
    if hub_repos.is_ref(name):
        ref = hub_repos.parse_ref(name, None if quant == catalog.DEFAULT_QUANT else quant)
        if revision and not ref.revision:
            ref = hub_repos.RepoRef(ref.repo, revision, ref.quant)
        return _resolve_ref(ref, cache=cache, offline=offline, force=force, token=token, say=say).path
    catalog.get(name)  # only catalog names here (never a folder): the unknown-name error lists them
    resolved = resolve_model(
        name,
        quant,
        cache=cache,
        revision=revision,
        offline=offline,
        force=force,
        progress=say,
        convert=convert,
        convert_locally=convert_locally,
        token=token,
    )
    return resolved.path


# ---- converted repos (hf:OWNER/NAME) ---------------------------------------------------------------------
def repo_dir(ref: hub_repos.RepoRef, cache: str | Path | None = None) -> Path:
    """Where the quant of converted repo `ref` is kept."""
    return cache_root(cache) / "hub" / hub_repos.repo_slot(ref.repo) / ref.quant


def _resolve_ref(
    ref: hub_repos.RepoRef,
    *,
    cache: str | Path | None,
    offline: bool | None,
    force: bool,
    token: str | None,
    say: Progress,
) -> ResolvedModel:
    root = cache_root(cache)
    dst = repo_dir(ref, root)
    offline = offline_mode() if offline is None else offline
    # The common case, a verified cache, takes no lock and no request.
    manifest = None if force else hub_repos.cached_manifest(dst, say, ref.revision)
    if manifest is None:
        lock = _lock_path(root, f"hub-{hub_repos.repo_slot(ref.repo)}-{ref.quant}")
        with _exclusive(lock, str(dst), say):
            manifest = hub_repos.pull_converted(
                ref.repo,
                ref.quant,
                dst,
                revision=ref.revision,
                token=token,
                offline=offline,
                force=force,
                say=say,
            )
    return ResolvedModel(dst, manifest, None, "downloaded")


# ---- local folders ----------------------------------------------------------------------------------------
def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~"))


def _checkpoint_key(folder: Path) -> str:
    """Identity of a local checkpoint's content: its path plus size and mtime of the files that matter."""
    parts: list[object] = [str(folder.resolve())]
    for rel in _CHECKPOINT_KEY_FILES:
        path = folder / rel
        stat = path.stat() if path.is_file() else None
        parts.append([rel, stat.st_size, stat.st_mtime_ns] if stat else [rel, None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def _local_slot(folder: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name)[:60] or "checkpoint"
    return f"{slug}-{_checkpoint_key(folder)}"


def _resolve_checkpoint_folder(
    folder: Path,
    quant: str,
    *,
    cache: str | Path | None,
    force: bool,
    convert: Converter | None,
    say: Progress,
) -> ResolvedModel:
    root = cache_root(cache)
    slot = _local_slot(folder)
    dst = root / "local" / slot / quant

    def source() -> tuple[Path, str | None, str | None]:
        return folder, str(folder.resolve()), None

    manifest = _ensure_converted(
        dst, _lock_path(root, f"local-{slot}-{quant}"), quant, source, force=force, convert=convert, say=say
    )
    return ResolvedModel(dst, manifest, None, "checkpoint")


def _resolve_folder(
    folder: Path,
    quant: str | None,
    *,
    cache: str | Path | None,
    force: bool,
    convert: Converter | None,
    say: Progress,
) -> ResolvedModel:
    if is_converted(folder):
        manifest = verify(folder, checksums=False)
        if quant is not None and manifest.quant != quant:
            raise Qwen3TTSError(
                f"{folder} is a converted {manifest.quant} model, not {quant}",
                "drop the quantization option or convert the checkpoint again at that quantization",
            )
        return ResolvedModel(folder, manifest, None, "converted")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        quant = catalog.check_quant(quant or catalog.DEFAULT_QUANT)
        return _resolve_checkpoint_folder(folder, quant, cache=cache, force=force, convert=convert, say=say)
    raise Qwen3TTSError(
        f"{folder} is neither a converted model (no {MANIFEST_NAME}) nor an official checkpoint "
        "(no config.json + model.safetensors)",
        f"pass a catalog name ({', '.join(catalog.names())}) or a complete folder",
    )


def resolve_model(
    name_or_path: str | Path,
    quant: str | None = None,
    *,
    cache: str | Path | None = None,
    revision: str | None = None,
    offline: bool | None = None,
    force: bool = False,
    progress: Progress | None = None,
    convert: Converter | None = None,
    convert_locally: bool = False,
    token: str | None = None,
) -> ResolvedModel:
    """A ready converted model from a catalog name, an official checkpoint folder, a converted folder or
    `hf:OWNER/NAME[@REVISION][:QUANT]` (a converted repo: only that quant is downloaded, every file is
    checked against its manifest's sha256 before first use).

    A cached catalog model costs one size check and no network access; a missing one is downloaded and
    converted once. A checkpoint folder is converted into the cache (again only when its files change).
    A converted folder (has manifest.json) is size-checked and used as is.
    """
    say = progress or (lambda _msg: None)
    text = str(name_or_path)
    if not isinstance(name_or_path, Path) and hub_repos.is_ref(text):
        ref = hub_repos.parse_ref(text, quant)
        return _resolve_ref(ref, cache=cache, offline=offline, force=force, token=token, say=say)
    path = Path(text).expanduser()
    entry = catalog.find(text)
    if isinstance(name_or_path, Path) or (path.is_dir() and (entry is None or _looks_like_path(text))):
        if not path.is_dir():
            raise Qwen3TTSError(f"model folder {path} does not exist", "check the path")
        return _resolve_folder(path.absolute(), quant, cache=cache, force=force, convert=convert, say=say)
    if entry is None:
        if _looks_like_path(text):
            raise Qwen3TTSError(
                f"model folder {path} does not exist", "check the path, or use a catalog name"
            )
        entry = catalog.get(text)  # raises the unknown-name error listing the valid names
    quant = catalog.check_quant(quant or catalog.DEFAULT_QUANT)
    dst, manifest = _pull(
        entry,
        quant,
        cache=cache,
        revision=revision,
        offline=offline,
        force=force,
        convert=convert,
        say=say,
        convert_locally=convert_locally,
        token=token,
    )
    return ResolvedModel(dst, manifest, entry, "catalog")


# ---- listing and removal --------------------------------------------------------------------------------
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, skipping the converter's hidden temp folders."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_models(cache: str | Path | None = None) -> list[CachedModel]:
    """Every converted (or half-converted) model folder in the cache."""
    root = cache_root(cache)
    found: list[CachedModel] = []
    for group, prefix in (("models", ""), ("local", "local/"), ("hub", hub_repos.HF_PREFIX)):
        for model in _visible_dirs(root / group):
            name = model.name.replace("--", "/", 1) if group == "hub" else model.name
            for quant_dir in _visible_dirs(model):
                found.append(
                    CachedModel(
                        name=prefix + name,
                        quant=quant_dir.name,
                        path=quant_dir,
                        size_bytes=_folder_bytes(quant_dir),
                        complete=is_converted(quant_dir),
                        origin=hub_repos.describe_origin(quant_dir),
                    )
                )
    return found


def remove_model(
    name: str,
    quant: str | None = None,
    *,
    cache: str | Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> list[Path]:
    """Delete the converted folders of catalog model `name` (one quant, or all); returns what was removed.

    `download` also deletes its files from the Hugging Face cache. Each folder is removed under its lock,
    so a conversion running in another process is never cut in half. `name` may be `hf:OWNER/NAME[:QUANT]`.
    """
    say = progress or (lambda _msg: None)
    root = cache_root(cache)
    if hub_repos.is_ref(name):
        ref = hub_repos.parse_ref(name, quant)
        explicit = quant is not None or name.rsplit(":", 1)[-1] in catalog.QUANTS
        model_root, lock_prefix = repo_dir(ref, root).parent, f"hub-{hub_repos.repo_slot(ref.repo)}"
        quants = [ref.quant] if explicit else [p.name for p in _visible_dirs(model_root)]
        entry = None
    else:
        entry = catalog.get(name)
        model_root, lock_prefix = root / "models" / entry.name, entry.name
        quants = [catalog.check_quant(quant)] if quant else [p.name for p in _visible_dirs(model_root)]
    removed: list[Path] = []
    for q in quants:
        folder = model_root / q
        if not folder.exists():
            continue
        with _exclusive(_lock_path(root, f"{lock_prefix}-{q}"), str(folder), say):
            shutil.rmtree(folder)
        removed.append(folder)
    if model_root.is_dir() and not any(model_root.iterdir()):
        model_root.rmdir()  # a staging or temp folder may still be in use: `models gc` removes stale ones
    if entry is not None and download and (hf_folder := _hf_repo_folder(entry.repo)).exists():
        shutil.rmtree(hf_folder)
        removed.append(hf_folder)
    return removed
