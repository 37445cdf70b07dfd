"""Converted model repos on a Hugging Face hub: publish a converted folder, pull one quant back, verified.

Repo layout: one folder per quantization (`q8_0/`, `q4_k_m/`...) holding exactly the files of a converted
model folder (its manifest.json lists them with their sha256), plus a README.md model card.

A pulled quant lands in the qwen3tts cache:
    <root>/hub/<owner>--<name>/<quant>/     for `hf:OWNER/NAME[@REVISION][:QUANT]`
    <root>/models/<name>/<quant>/           for a catalog model whose entry names a converted repo
It is downloaded into a hidden staging folder beside it (`.download/`, resumable), every file is checked
against the manifest's sha256, and only then is the folder renamed into place with an origin.json that
records where it came from and the size + mtime of every verified file. Later uses compare those (no
network, no hashing); a changed file is hashed again and downloaded again when it no longer matches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.convert.manifest import (
    CONVERTER_VERSION,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    Manifest,
    sha256_file,
)
from qwen3tts_cli.disk_space import gigabytes, require_free_space
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import replace_file

HF_PREFIX = "hf:"
ORIGIN_NAME = "origin.json"  # written beside the manifest; never part of it, never published
STAGING_NAME = ".download"
ORIGIN_DOWNLOADED = "downloaded"  # a converted repo, verified here
ORIGIN_CONVERTED = "converted"  # converted on this machine
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

Progress = Callable[[str], None]


# ---- references -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RepoRef:
    """`hf:OWNER/NAME[@REVISION][:QUANT]`."""

    repo: str
    revision: str | None
    quant: str

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{self.repo}{at}:{self.quant}"


def is_ref(text: str) -> bool:
    return text.startswith(HF_PREFIX)


def parse_ref(text: str, quant: str | None = None) -> RepoRef:
    """Parse `hf:OWNER/NAME[@REVISION][:QUANT]`; `quant` (an option) must agree with the one in the text."""
    body = text[len(HF_PREFIX) :]
    named_quant = None
    if ":" in body:
        body, named_quant = body.rsplit(":", 1)
    repo, at, revision = body.partition("@")
    if not _REPO_ID.match(repo) or body.count("@") > 1 or (at and not revision):
        raise Qwen3TTSError(
            f"{text!r} is not a converted-repo reference",
            "write hf:OWNER/NAME[@REVISION][:QUANT], e.g. hf:me/qwen3-tts-0.6b:q8_0",
        )
    if named_quant and quant and named_quant != quant:
        raise Qwen3TTSError(
            f"{text} names quantization {named_quant} but --quant says {quant}", "drop one of them"
        )
    return RepoRef(repo, revision or None, catalog.check_quant(named_quant or quant or catalog.DEFAULT_QUANT))


def repo_slot(repo: str) -> str:
    return repo.replace("/", "--")


# ---- origin records ---------------------------------------------------------------------------------------
def _stamp(folder: Path, manifest: Manifest) -> dict[str, list[int]]:
    stamps = {}
    for rel in [*manifest.files, MANIFEST_NAME]:
        stat = (folder / rel).stat()
        stamps[rel] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def write_origin(folder: Path, origin: str, **facts: Any) -> None:
    """Record where a converted folder came from (atomically; the manifest's bytes are never touched)."""
    _write_origin_data(folder, {"origin": origin, **facts})


def _update_origin(folder: Path, **changes: Any) -> None:
    _write_origin_data(folder, read_origin(folder) | changes)


def _write_origin_data(folder: Path, data: dict[str, Any]) -> None:
    tmp = folder / f".{ORIGIN_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    replace_file(tmp, folder / ORIGIN_NAME)


def read_origin(folder: Path) -> dict[str, Any]:
    """origin.json of a folder; a folder without one was converted here (before origins were recorded)."""
    try:
        data = json.loads((folder / ORIGIN_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {"origin": ORIGIN_CONVERTED}
    except (OSError, ValueError):
        return {"origin": ORIGIN_CONVERTED}


def describe_origin(folder: Path) -> str:
    """`converted here` or `downloaded from OWNER/NAME@REV` for listings."""
    origin = read_origin(folder)
    if origin.get("origin") == ORIGIN_DOWNLOADED:
        revision = str(origin.get("revision") or "")[:12]
        return f"downloaded converted ({origin.get('repo')}@{revision})"
    return "converted here"


# ---- checks -----------------------------------------------------------------------------------------------
def compatibility_problem(manifest: Manifest) -> str | None:
    """Why this qwen3tts cannot load a folder with this manifest, or None."""
    if manifest.format != MANIFEST_FORMAT or manifest.converter_version != CONVERTER_VERSION:
        return (
            f"converter version {manifest.converter_version} (manifest format {manifest.format}); "
            f"this qwen3tts reads converter version {CONVERTER_VERSION} (format {MANIFEST_FORMAT})"
        )
    return None


def bad_files(folder: Path, manifest: Manifest) -> list[str]:
    """Every manifest file that is missing, of the wrong size, or fails its sha256 check."""
    bad = []
    for rel, info in manifest.files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            bad.append(rel)
    return bad


def cached_manifest(folder: Path, say: Progress, revision: str | None = None) -> Manifest | None:
    """The manifest of a downloaded folder that is verified and unchanged since, else None (fetch it).

    Unchanged (same size and mtime as when verified) costs no hashing; a changed file is hashed again.
    """
    origin = read_origin(folder)
    if origin.get("origin") != ORIGIN_DOWNLOADED or not (folder / MANIFEST_NAME).is_file():
        return None
    if revision and revision not in (origin.get("revision"), origin.get("requested")):
        return None  # another revision was asked for: its commit is looked up (maybe the same one)
    try:
        manifest = Manifest.read(folder)
    except Qwen3TTSError:
        return None
    if compatibility_problem(manifest) is not None:
        return None
    try:
        unchanged = _stamp(folder, manifest) == origin.get("verified")
    except OSError:  # a file is gone
        say(f"{folder} is missing files; downloading them again")
        return None
    if unchanged:
        return manifest
    if bad := bad_files(folder, manifest):
        say(f"{folder}: {', '.join(bad)} changed since it was verified (damaged?); downloading again")
        return None
    _update_origin(folder, verified=_stamp(folder, manifest))  # same bytes, new mtime: hashed once more
    return manifest


# ---- disk space -------------------------------------------------------------------------------------------
def check_free_space(path: Path, needed: int, what: str) -> None:
    require_free_space(
        [(path, needed)], what, "free some disk space, or point QWEN3TTS_CACHE at a disk with more room"
    )


# ---- download ---------------------------------------------------------------------------------------------
class TransferMeter:
    """One self-rewriting line on a terminal while files download: bytes so far of the total, and the rate.

    `measure` returns the bytes on disk so far (finished files plus partial ones). Silent unless enabled.
    """

    def __init__(
        self,
        label: str,
        total: int,
        measure: Callable[[], int],
        *,
        enabled: bool,
        stream: TextIO | None = None,
        interval: float = 0.5,
    ) -> None:
        self.label, self.total, self.measure, self.enabled = label, total, measure, enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = (time.monotonic(), 0)

    def line(self) -> str:
        began, base = self._start
        done = max(self.measure() - base, 0)
        rate = done / max(time.monotonic() - began, 1e-6)
        return f"{self.label}: {gigabytes(done)} of {gigabytes(self.total)}, {gigabytes(int(rate))}/s"

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def __enter__(self) -> TransferMeter:
        if self.enabled:
            self._start = (time.monotonic(), self.measure())
            self._thread = threading.Thread(target=self._run, name="download-meter", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _meter_wanted() -> bool:
    """On a terminal, unless progress bars are off (`--quiet` or a pipe turn them off: cli/common.py)."""
    from huggingface_hub.utils import are_progress_bars_disabled

    return sys.stderr.isatty() and not are_progress_bars_disabled()


def _bytes_on_disk(staging: Path, quant: str) -> int:
    """Finished files of the quant folder plus huggingface-hub's partial ones."""
    total = 0
    try:
        for path in [
            *(staging / quant).rglob("*"),
            *(staging / ".cache" / "huggingface").rglob("*.incomplete"),
        ]:
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:
                pass  # renamed into place meanwhile
    except OSError:
        pass  # a folder was replaced while it was walked: the next tick counts again
    return total


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def endpoint_url() -> str:
    """The hub that downloads go to, for messages: HF_ENDPOINT, else huggingface-hub's default."""
    return _endpoint() or "https://huggingface.co"


def _hub_error(exc: Exception, repo: str, quant: str | None = None) -> Qwen3TTSError:
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = endpoint_url()
    if isinstance(exc, EntryNotFoundError):
        return Qwen3TTSError(
            f"{repo} has no {quant} folder ({quant}/{MANIFEST_NAME} is missing)",
            "pick a quantization the repo publishes (see its README)",
        )
    if (
        isinstance(exc, LocalEntryNotFoundError | ConnectionError | TimeoutError)
        or "Connect" in type(exc).__name__
    ):
        return Qwen3TTSError(
            f"cannot reach {endpoint} to download {repo}", "check the network connection or HF_ENDPOINT"
        )
    if isinstance(exc, RepositoryNotFoundError | GatedRepoError):
        return Qwen3TTSError(
            f"{endpoint} has no repository {repo} that this token can read",
            "check the name; a private repo needs --token or HF_TOKEN (or `hf auth login`)",
        )
    if isinstance(exc, RevisionNotFoundError):
        return Qwen3TTSError(f"{repo} has no such revision", "use a branch, tag or commit that exists")
    if isinstance(exc, HfHubHTTPError):
        return Qwen3TTSError(
            f"{endpoint} refused a request for {repo}: {exc}", "check the token and the name"
        )
    return Qwen3TTSError(
        f"downloading {repo} from {endpoint} failed: {type(exc).__name__}: {exc}",
        "run the command again: finished files are kept, the rest is fetched again",
    )


def pull_converted(
    repo: str,
    quant: str,
    dst: Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    offline: bool = False,
    force: bool = False,
    say: Progress,
) -> Manifest:
    """Make `dst` a verified copy of `<quant>/` of converted repo `repo`; returns its manifest.

    The caller holds the lock of `dst`. A verified, unchanged cache costs no request at all.
    """
    if not force and (manifest := cached_manifest(dst, say, revision)) is not None:
        return manifest
    if offline:
        raise Qwen3TTSError(
            f"{repo} ({quant}) is not downloaded and verified yet; downloads are off (HF_HUB_OFFLINE)",
            "pull it once with network access, or unset HF_HUB_OFFLINE",
        )
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    staging = dst.parent / STAGING_NAME
    try:
        commit = HfApi(endpoint=_endpoint(), token=token).model_info(repo, revision=revision).sha
        if not force and read_origin(dst).get("revision") == commit and (known := cached_manifest(dst, say)):
            # That name points at the commit already here: remember it, download nothing.
            _update_origin(dst, requested=revision)
            return known
        fetch = dict(repo_id=repo, revision=commit, local_dir=staging, token=token, endpoint=_endpoint())
        # The manifest first: a wrong converter version or a full disk is found before the big files move.
        hf_hub_download(filename=f"{quant}/{MANIFEST_NAME}", force_download=True, **fetch)  # type: ignore[arg-type]
    except Exception as exc:
        raise _hub_error(exc, repo, quant) from exc
    folder = staging / quant
    manifest = Manifest.read(folder)
    if problem := compatibility_problem(manifest):
        raise Qwen3TTSError(
            f"{repo} {quant} was made by {problem}",
            "use a revision of the repo published with this converter version, or --convert-locally",
        )
    missing = sum(
        info["bytes"]
        for rel, info in manifest.files.items()
        if not ((folder / rel).is_file() and (folder / rel).stat().st_size == info["bytes"])
    )
    check_free_space(staging, missing, f"downloading {repo} {quant}")
    say(f"downloading {repo} {quant} ({gigabytes(missing)}) at {commit[:12]}")
    patterns = [f"{quant}/{rel}" for rel in manifest.files]
    meter = TransferMeter(
        f"{repo} {quant}", missing, lambda: _bytes_on_disk(staging, quant), enabled=_meter_wanted()
    )
    try:
        with meter:
            snapshot_download(allow_patterns=patterns, **fetch)  # type: ignore[arg-type]
        say(f"verifying {len(manifest.files)} files against their sha256")
        if bad := bad_files(folder, manifest):
            say(f"{', '.join(bad)} failed the sha256 check (damaged or tampered download); downloading again")
            for rel in bad:
                hf_hub_download(filename=f"{quant}/{rel}", force_download=True, **fetch)  # type: ignore[arg-type]
    except Exception as exc:
        raise _hub_error(exc, repo, quant) from exc
    if bad := bad_files(folder, manifest):
        for rel in bad:  # nothing unverified stays where it could be loaded
            (folder / rel).unlink(missing_ok=True)
        raise Qwen3TTSError(
            f"{repo}@{commit[:12]} {quant}: {', '.join(bad)} do not match the sha256 in its manifest "
            "(downloaded twice)",
            "the repo is damaged or was altered after publishing: tell its owner, or --convert-locally",
        )
    write_origin(
        folder,
        ORIGIN_DOWNLOADED,
        repo=repo,
        revision=commit,
        requested=revision,
        quant=quant,
        verified=_stamp(folder, manifest),
    )
    if dst.exists():
        shutil.rmtree(dst)
    replace_file(folder, dst)
    shutil.rmtree(staging / ".cache" / "huggingface" / "download" / quant, ignore_errors=True)
    return manifest


# ---- publish ----------------------------------------------------------------------------------------------
def source_license(manifest: Manifest, token: str | bool | None = None) -> str | None:
    """The license named in the source checkpoint's README front matter (local folder or hub repo)."""
    source = manifest.source_repo
    if not source:
        return None
    readme: Path | None = Path(source) / "README.md"
    if not readme.is_file():
        readme = None
        if _REPO_ID.match(source):
            from huggingface_hub import hf_hub_download

            try:
                readme = Path(
                    hf_hub_download(
                        source,
                        "README.md",
                        revision=manifest.source_revision,
                        token=token,
                        endpoint=_endpoint(),
                    )
                )
            except Exception:  # no card, no network: the license stays unknown, the card says so
                readme = None
    if readme is None:
        return None
    front = re.match(r"^---\s*\n(.*?)\n---", readme.read_text(encoding="utf-8", errors="replace"), re.S)
    found = re.search(r"^license:\s*['\"]?([^'\"\s]+)", front.group(1), re.M) if front else None
    return found.group(1) if found else None


# What `say` needs besides the text, per model kind (a Base model clones, a VoiceDesign one is described).
_VOICE_EXAMPLE = {
    spec.KIND_CUSTOM_VOICE: " --speaker ryan",
    spec.KIND_BASE: ' --ref-audio me.wav --ref-text "What I say in the recording."',
    spec.KIND_VOICE_DESIGN: ' --design "a calm, low voice"',
}


def model_card(repo: str, manifests: dict[str, Manifest], license_id: str | None) -> str:
    """README.md of a converted repo: where it came from, what is in it, how to use it."""
    first = manifests[sorted(manifests)[0]]
    ref = f"hf:{repo}:{sorted(manifests)[0]}"
    voice = _VOICE_EXAMPLE.get(first.kind, "")
    source = first.source_repo or "unknown"
    revision = first.source_revision or "unknown"
    front = ["---", f"license: {license_id or 'other'}", "library_name: qwen3tts-cli"]
    if first.source_repo and _REPO_ID.match(first.source_repo):
        front.append(f"base_model: {first.source_repo}")
    front += ["pipeline_tag: text-to-speech", "tags:", "- qwen3-tts", "- gguf", "- onnx", "---", ""]
    lines = [
        f"# {repo.split('/')[-1]}",
        "",
        f"Qwen3-TTS {first.kind} ({first.size_tag}) converted for [qwen3tts-cli](https://pypi.org/project/"
        "qwen3tts-cli/): GGUF talker and code predictor (llama.cpp), ONNX codec and speaker encoder.",
        "",
        f"- Source checkpoint: `{source}` at revision `{revision}`",
        f"- License: {license_id or 'unknown (not stated by the source checkpoint; check it before use)'}"
        + (" (carried from the source checkpoint)" if license_id else ""),
        f"- Converter version: {first.converter_version} (manifest format {first.format})",
        "",
        "## Use it",
        "",
        "```sh",
        f'qwen3tts say --model {ref} "Hello there."{voice} -o hello.wav',
        f"qwen3tts models pull {ref}",
        "```",
        "",
        "```python",
        "from qwen3tts_cli import TTS",
        f'tts = TTS.load("{ref}")',
        "```",
        "",
        "qwen3tts downloads only the files of the chosen quantization, checks each against the sha256 below "
        "before first use, and refuses a folder made by a converter version it cannot read.",
        "",
    ]
    for quant in sorted(manifests):
        manifest = manifests[quant]
        total = sum(info["bytes"] for info in manifest.files.values())
        lines += [
            f"## `{quant}/` ({gigabytes(total)})",
            "",
            f"Converter version {manifest.converter_version}, codec {manifest.codec_precision}, "
            f"source revision `{manifest.source_revision or 'unknown'}`.",
            "",
            "| file | bytes | sha256 |",
            "|---|---:|---|",
        ]
        lines += [
            f"| `{rel}` | {info['bytes']} | `{info['sha256']}` |" for rel, info in manifest.files.items()
        ]
        lines.append("")
    return "\n".join(front + lines)


def _published_manifests(api: Any, repo: str, skip: str) -> dict[str, Manifest]:
    """Manifests of the other quant folders already in the repo (so the card lists them all)."""
    from huggingface_hub import hf_hub_download

    found: dict[str, Manifest] = {}
    for path in api.list_repo_files(repo):
        quant, _, name = path.partition("/")
        if name != MANIFEST_NAME or quant == skip:
            continue
        local = hf_hub_download(repo, path, token=api.token, endpoint=_endpoint())
        found[quant] = Manifest(**json.loads(Path(local).read_text(encoding="utf-8")))
    return found


def publish(
    folder: Path,
    repo: str,
    *,
    private: bool = False,
    token: str | None = None,
    say: Progress,
) -> str:
    """Upload converted folder `folder` as `<quant>/` of repo `repo` (created if needed) with a model card.

    The folder is verified (full sha256) first: a damaged file is never published. Returns the commit URL.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not _REPO_ID.match(repo):
        raise Qwen3TTSError(f"{repo!r} is not a repo name", "use OWNER/NAME, e.g. me/qwen3-tts-0.6b-custom")
    manifest = Manifest.read(folder)
    if problem := compatibility_problem(manifest):
        raise Qwen3TTSError(f"{folder} was made by {problem}", "convert it again before publishing it")
    say(f"verifying {folder}")
    if bad := bad_files(folder, manifest):
        raise Qwen3TTSError(f"{folder}: {', '.join(bad)} fail the sha256 check", "convert the model again")
    api = HfApi(endpoint=_endpoint(), token=token)
    quant = manifest.quant
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        manifests = _published_manifests(api, repo, quant) | {quant: manifest}
        card = model_card(repo, manifests, source_license(manifest, token))
        operations = [
            CommitOperationAdd(f"{quant}/{rel}", str(folder / rel))
            for rel in [*manifest.files, MANIFEST_NAME]
        ]
        operations.append(CommitOperationAdd("README.md", card.encode()))
        say(f"uploading {len(operations) - 1} files to {repo}/{quant}")
        info = api.create_commit(
            repo,
            operations,
            commit_message=f"{quant}: converted by qwen3tts converter {manifest.converter_version}",
        )
    except Qwen3TTSError:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo) from exc
    say(f"published {url}")
    return info.commit_url
