"""Converted model repos (publish, hf: pull, verification) and cache hygiene, against the loopback hub."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hubserver import LoopbackHub
from test_cli import cli_env, read_pcm16, run_cli
from test_hub import FakeConverter

from qwen3tts_cli import catalog, disk_space, hub, hub_repos, spec
from qwen3tts_cli.cache_hygiene import collect, find_garbage, verify_cached
from qwen3tts_cli.convert.manifest import CONVERTER_VERSION, Manifest
from qwen3tts_cli.errors import Qwen3TTSError

TOKEN = "hf_loopback_token"
REPO = "me/tiny-cv"
QUANT = "f32"
BIG = "talker.gguf"
LICENSE_CARD = "---\nlicense: apache-2.0\n---\n# tiny source\n"
OFFICIAL = catalog.CATALOG["0.6b-custom"].repo


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def source_checkpoint(
    checkpoint_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny custom-voice checkpoint whose README states a license (the card must carry it)."""
    folder = tmp_path_factory.mktemp("hubrepo-src") / "ckpt"
    shutil.copytree(checkpoint_factory(spec.KIND_CUSTOM_VOICE), folder)
    (folder / "README.md").write_text(LICENSE_CARD)
    return folder


@pytest.fixture(scope="session")
def tiny_model(source_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwen3tts_cli.convert.converter import convert_checkpoint

    out = tmp_path_factory.mktemp("hubrepo-model") / "model"
    return convert_checkpoint(source_checkpoint, out, QUANT, source_repo=str(source_checkpoint), threads=1)


@pytest.fixture(scope="session")
def repo_folder(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layout a published repo has: <quant>/ with the converted files."""
    folder = tmp_path_factory.mktemp("hubrepo-layout")
    shutil.copytree(tiny_model, folder / QUANT)
    return folder


@pytest.fixture
def loopback(repo_folder: Path) -> Iterator[LoopbackHub]:
    server = LoopbackHub().start()
    server.add_repo(REPO, repo_folder)
    yield server
    server.stop()


@pytest.fixture
def env(loopback: LoopbackHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "QWEN3TTS_HOME", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in (catalog.CONVERTED_REPOS_ENV, catalog.CONVERT_LOCALLY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", loopback.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the loopback speaks LFS
    return tmp_path


def _gets(server: LoopbackHub, name: str) -> int:
    return sum(1 for r in server.requests if r.method == "GET" and r.path.endswith(f"/{QUANT}/{name}"))


def _flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def _ref(repo: str = REPO) -> str:
    return f"hf:{repo}:{QUANT}"


# ---- references --------------------------------------------------------------------------------------------
def test_references_parse_and_bad_ones_say_the_form() -> None:
    assert hub_repos.parse_ref("hf:me/x") == hub_repos.RepoRef("me/x", None, catalog.DEFAULT_QUANT)
    assert hub_repos.parse_ref("hf:me/x@v1:q4_k_m") == hub_repos.RepoRef("me/x", "v1", "q4_k_m")
    assert hub_repos.parse_ref("hf:me/x", "f16").quant == "f16"
    for bad in ("hf:x", "hf:me/x@", "hf:/x", "hf:me/x@a@b"):
        with pytest.raises(Qwen3TTSError, match="hf:OWNER/NAME"):
            hub_repos.parse_ref(bad)
    with pytest.raises(Qwen3TTSError, match="unknown quantization"):
        hub_repos.parse_ref("hf:me/x:q3")
    with pytest.raises(Qwen3TTSError, match="--quant says f16"):
        hub_repos.parse_ref("hf:me/x:q8_0", "f16")


# ---- publish, then pull and speak (CLI end to end) ---------------------------------------------------------
def test_publish_then_pull_on_a_clean_cache_speak_and_go_offline(
    tiny_model: Path, loopback: LoopbackHub, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, HF_ENDPOINT=loopback.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
    published = run_cli(["models", "publish", tiny_model, "--repo", "me/new", "--token", TOKEN], env)
    assert published.code == 0, published.stderr

    manifest = Manifest.read(tiny_model)
    repo = loopback.repos["me/new"]
    expected = {f"{QUANT}/{rel}" for rel in [*manifest.files, "manifest.json"]} | {"README.md"}
    assert set(repo.files) == expected  # origin.json or anything else local never leaves the machine
    for rel in manifest.files:
        assert repo.files[f"{QUANT}/{rel}"].source.read_bytes() == (tiny_model / rel).read_bytes()
    card = repo.files["README.md"].source.read_text()
    assert "license: apache-2.0" in card and "carried from the source checkpoint" in card
    assert (
        f"Converter version: {CONVERTER_VERSION}" in card
        and str(tiny_model.parent) not in card.split("---")[1]
    )
    assert all(info["sha256"] in card for info in manifest.files.values())
    assert 'qwen3tts say --model hf:me/new:f32 "Hello there." --speaker ryan' in card

    wav = tmp_path / "hello.wav"
    say = ["say", "Hello", "-o", wav, "--model", "hf:me/new:f32", "--max-frames", "3", "-t", "1", "--greedy"]
    first = run_cli(say, env)
    assert first.code == 0, first.stderr
    assert len(read_pcm16(wav)) == 3 * spec.SAMPLES_PER_FRAME
    assert "downloading me/new f32" in first.stderr and "verifying" in first.stderr
    assert "%|" not in first.stderr and "B/s" not in first.stderr  # progress bars only on a terminal
    pulled = tmp_path / "cache" / "hub" / "me--new" / QUANT
    assert hub_repos.read_origin(pulled)["origin"] == "downloaded"
    hub.verify_model(pulled)

    before = len(loopback.requests)
    for offline in ("1", "0"):  # a verified cache needs no request, whether or not the network is allowed
        again = run_cli(
            [*say[:3], tmp_path / f"again{offline}.wav", *say[4:]], dict(env, HF_HUB_OFFLINE=offline)
        )
        assert again.code == 0, again.stderr
    assert len(loopback.requests) == before

    listed = run_cli(["models", "list"], env).out
    row = next(line for line in listed.splitlines() if line.startswith("hf:me/new"))
    assert " f32 " in row and "downloaded converted (me/new@" in row and " MB" in row


def test_publish_adds_a_quant_and_the_card_lists_both(
    tiny_model: Path, env: Path, loopback: LoopbackHub, tmp_path: Path
) -> None:
    hub_repos.publish(tiny_model, "me/two", token=TOKEN, say=lambda _m: None)
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    data = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(data | {"quant": "f16"}))
    hub_repos.publish(other, "me/two", token=TOKEN, say=lambda _m: None)
    files = set(loopback.repos["me/two"].files)
    assert "f32/manifest.json" in files and "f16/manifest.json" in files
    card = loopback.repos["me/two"].files["README.md"].source.read_text()
    assert "## `f16/`" in card and "## `f32/`" in card


def test_publish_refuses_a_damaged_folder_and_needs_a_token(
    tiny_model: Path, env: Path, loopback: LoopbackHub, tmp_path: Path
) -> None:
    with pytest.raises(Qwen3TTSError, match="no repository me/x that this token can read|refused"):
        hub_repos.publish(tiny_model, "me/x", say=lambda _m: None)  # no token: the hub says 401
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model, damaged)
    _flip_first_byte(damaged / BIG)
    with pytest.raises(Qwen3TTSError, match="talker.gguf fail the sha256 check"):
        hub_repos.publish(damaged, "me/x", token=TOKEN, say=lambda _m: None)
    assert "me/x" not in loopback.repos


# ---- pull: verification ------------------------------------------------------------------------------------
def test_pull_downloads_only_that_quant_and_records_its_origin(
    env: Path, loopback: LoopbackHub, repo_folder: Path, tiny_model: Path, tmp_path: Path
) -> None:
    multi = tmp_path / "multi"
    shutil.copytree(repo_folder, multi)
    shutil.copytree(tiny_model, multi / "q8_0")  # another quant folder: must not be fetched
    loopback.add_repo("me/multi", multi)
    resolved = hub.resolve_model(_ref("me/multi"))
    assert resolved.origin == "downloaded" and resolved.path == env / "cache" / "hub" / "me--multi" / QUANT
    gets = [r.path for r in loopback.requests if r.method == "GET" and "/resolve/" in r.path]
    assert gets and all(f"/{QUANT}/" in path for path in gets)  # not a byte of q8_0/
    origin = hub_repos.read_origin(resolved.path)
    assert origin["repo"] == "me/multi" and origin["revision"] == loopback.repos["me/multi"].commit
    assert set(origin["verified"]) == {*resolved.manifest.files, "manifest.json"}
    assert not (resolved.path.parent / hub_repos.STAGING_NAME / QUANT).exists()


def test_a_tampered_repo_file_is_never_kept(env: Path, loopback: LoopbackHub, repo_folder: Path) -> None:
    good = (repo_folder / QUANT / BIG).read_bytes()
    loopback.replace_file(REPO, f"{QUANT}/{BIG}", bytes([good[0] ^ 0xFF]) + good[1:])
    messages: list[str] = []
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model(_ref(), progress=messages.append)
    assert BIG in info.value.message and "do not match the sha256" in info.value.message
    assert any("failed the sha256 check" in m for m in messages)  # reported, then fetched again
    assert _gets(loopback, BIG) == 2
    dst = env / "cache" / "hub" / "me--tiny-cv" / QUANT
    assert not dst.exists() and not (dst.parent / hub_repos.STAGING_NAME / QUANT / BIG).exists()


def test_a_corrupted_transfer_is_downloaded_again(env: Path, loopback: LoopbackHub) -> None:
    loopback.corrupt_once(f"{QUANT}/{BIG}")
    messages: list[str] = []
    resolved = hub.resolve_model(_ref(), progress=messages.append)
    assert any(BIG in m and "failed the sha256 check" in m for m in messages)
    assert _gets(loopback, BIG) == 2
    hub.verify_model(resolved.path)


def test_a_file_changed_in_the_cache_is_found_and_fetched_again(env: Path, loopback: LoopbackHub) -> None:
    first = hub.resolve_model(_ref())
    _flip_first_byte(first.path / BIG)  # same size: only the sha256 tells
    messages: list[str] = []
    again = hub.resolve_model(_ref(), progress=messages.append)
    assert any("changed since it was verified" in m for m in messages)
    assert _gets(loopback, BIG) == 2
    hub.verify_model(again.path)


def test_a_touched_but_intact_file_is_hashed_once_and_kept(env: Path, loopback: LoopbackHub) -> None:
    first = hub.resolve_model(_ref())
    os.utime(first.path / BIG, ns=(0, 10**18))  # new mtime, same bytes
    before = len(loopback.requests)
    assert hub.resolve_model(_ref()).path == first.path
    assert len(loopback.requests) == before  # hashed, found intact, stamped again: no download
    assert hub_repos.read_origin(first.path)["verified"][BIG][1] == 10**18


def test_a_cut_connection_still_ends_verified(env: Path, loopback: LoopbackHub, repo_folder: Path) -> None:
    loopback.cut_once(f"{QUANT}/{BIG}", (repo_folder / QUANT / BIG).stat().st_size // 2)
    resolved = hub.resolve_model(_ref())
    assert _gets(loopback, BIG) == 2
    hub.verify_model(resolved.path)


def test_another_converter_version_is_refused_before_the_big_files(
    env: Path, loopback: LoopbackHub, tiny_model: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old / QUANT)
    data = json.loads((old / QUANT / "manifest.json").read_text())
    (old / QUANT / "manifest.json").write_text(json.dumps(data | {"converter_version": "2"}))
    loopback.add_repo("me/old", old)
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model(_ref("me/old"))
    assert "converter version 2" in info.value.message and f"reads converter version {CONVERTER_VERSION}" in (
        info.value.message
    )
    assert _gets(loopback, BIG) == 0


def test_private_repo_needs_a_token(
    env: Path, loopback: LoopbackHub, repo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback.add_repo("me/secret", repo_folder, private=True)
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model(_ref("me/secret"))
    assert "me/secret" in info.value.message and "token" in info.value.hint
    assert hub.resolve_model(_ref("me/secret"), token=TOKEN).origin == "downloaded"
    shutil.rmtree(env / "cache")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the usual way to give it
    hub.verify_model(hub.resolve_model(_ref("me/secret")).path)


def test_offline_verified_cache_makes_zero_requests(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Qwen3TTSError, match="HF_HUB_OFFLINE"):
        hub.resolve_model(_ref())
    assert loopback.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = hub.resolve_model(_ref()).path
    before = len(loopback.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model(_ref()).path == path
    loopback.stop()
    assert hub.resolve_model(_ref()).path == path
    assert len(loopback.requests) == before


def test_not_enough_disk_space_is_refused_with_the_numbers(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_space, "free_bytes", lambda _path: 1_000)
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model(_ref())
    assert "needs" in info.value.message and "0.0 MB free at" in info.value.message
    assert _gets(loopback, BIG) == 0


# ---- the catalog with a converted repo ---------------------------------------------------------------------
def test_catalog_prefers_its_converted_repo(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch, source_checkpoint: Path
) -> None:
    monkeypatch.setenv(catalog.CONVERTED_REPOS_ENV, f"0.6b-custom={REPO}")
    convert = FakeConverter()
    resolved = hub.resolve_model("0.6b-custom", QUANT, convert=convert)
    assert convert.calls == [] and resolved.path == hub.model_dir("0.6b-custom", QUANT)
    assert hub_repos.read_origin(resolved.path)["repo"] == REPO
    assert not any(OFFICIAL in r.path for r in loopback.requests)

    loopback.add_repo(OFFICIAL, source_checkpoint)
    forced = hub.resolve_model("0.6b-custom", "q8_0", convert=convert, convert_locally=True)
    assert len(convert.calls) == 1 and hub_repos.read_origin(forced.path)["origin"] == "converted"


def test_catalog_falls_back_to_converting_the_official_checkpoint(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch, source_checkpoint: Path
) -> None:
    loopback.add_repo(OFFICIAL, source_checkpoint)
    monkeypatch.setenv(catalog.CONVERTED_REPOS_ENV, "0.6b-custom=me/missing")
    convert = FakeConverter()
    messages: list[str] = []
    resolved = hub.resolve_model("0.6b-custom", QUANT, convert=convert, progress=messages.append)
    assert len(convert.calls) == 1 and any("converted repo me/missing not used" in m for m in messages)
    assert hub_repos.describe_origin(resolved.path) == "converted here"


def test_cli_convert_locally_skips_the_converted_repo(
    loopback: LoopbackHub, tmp_path: Path, source_checkpoint: Path
) -> None:
    loopback.add_repo(OFFICIAL, source_checkpoint)
    env = cli_env(tmp_path, HF_ENDPOINT=loopback.url, HF_HUB_OFFLINE="0")
    env[catalog.CONVERTED_REPOS_ENV] = f"0.6b-custom={REPO}"
    pulled = run_cli(["models", "pull", "0.6b-custom", "-q", QUANT, "--convert-locally"], env)
    assert pulled.code == 0, pulled.stderr
    assert hub_repos.describe_origin(Path(pulled.out.strip())) == "converted here"
    assert not any(f"/{REPO}/" in r.path for r in loopback.requests)
    again = run_cli(["models", "pull", f"hf:{REPO}:{QUANT}"], env)
    assert again.code == 0 and Path(again.out.strip()) == tmp_path / "cache" / "hub" / "me--tiny-cv" / QUANT


# ---- verify / gc / list ------------------------------------------------------------------------------------
def test_verify_names_the_bad_files(env: Path, loopback: LoopbackHub, tmp_path: Path) -> None:
    good = hub.resolve_model(_ref()).path
    local = hub.model_dir("0.6b-custom", QUANT)
    shutil.copytree(good, local)
    assert all(r.ok for r in verify_cached())
    _flip_first_byte(local / BIG)
    (local / "tokenizer.json").unlink()
    checked = {r.model.name: r for r in verify_cached()}
    assert checked["0.6b-custom"].bad_files == sorted(
        ["talker.gguf", "tokenizer.json"], key=list(Manifest.read(local).files).index
    )
    assert checked[f"hf:{REPO}"].ok
    assert [r.model.name for r in verify_cached(f"hf:{REPO}")] == [f"hf:{REPO}"]

    env_vars = cli_env(tmp_path, QWEN3TTS_CACHE=str(env / "cache"))
    result = run_cli(["models", "verify"], env_vars)
    assert result.code == 1
    assert f"hf:{REPO} f32: ok" in result.out
    error = result.error_lines()
    assert len(error) == 1 and "talker.gguf" in error[0] and "tokenizer.json" in error[0]
    assert run_cli(["models", "verify", f"hf:{REPO}"], env_vars).code == 0
    assert run_cli(["models", "verify", "1.7b-base"], env_vars).code == 1  # not cached: said so


def _age(path: Path) -> None:
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (0, 0))


def test_gc_lists_then_removes_only_what_is_stale(env: Path, loopback: LoopbackHub, tmp_path: Path) -> None:
    good = hub.resolve_model(_ref()).path
    models = env / "cache" / "models" / "0.6b-custom"
    old = models / "q8_0"
    shutil.copytree(good, old)
    data = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(data | {"converter_version": "2"}))
    dead_temp = models / ".q4_0.tmp-999999999"
    dead_temp.mkdir()
    (dead_temp / "talker.gguf").write_bytes(b"x" * 1000)
    live_temp = models / f".f16.tmp-{os.getpid()}"  # a conversion still running: kept
    live_temp.mkdir()
    staging = good.parent / hub_repos.STAGING_NAME
    (staging / "q8_0").mkdir(parents=True)
    (staging / "q8_0" / "part").write_bytes(b"y" * 500)
    _age(staging)
    blobs = env / "hf" / "hub" / "models--Qwen--x" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc.incomplete").write_bytes(b"z" * 300)
    _age(blobs / "abc.incomplete")
    (blobs / "fresh.incomplete").write_bytes(b"z")  # being written right now: kept

    unfinished = env / "cache" / "models" / "0.6b-base" / "q8_0"  # no manifest, untouched for long
    unfinished.mkdir(parents=True)
    (unfinished / "talker.gguf").write_bytes(b"w" * 10)
    _age(unfinished)
    recent = env / "cache" / "models" / "0.6b-base" / "f16"  # no manifest yet, but just written: kept
    recent.mkdir()

    garbage = {item.path: item for item in find_garbage()}
    assert set(garbage) == {old, dead_temp, staging, blobs / "abc.incomplete", unfinished}
    assert "converter version 2" in garbage[old].reason
    assert garbage[dead_temp].size_bytes == 1000 and garbage[staging].size_bytes >= 500

    env_vars = cli_env(tmp_path, QWEN3TTS_CACHE=str(env / "cache"), HF_HOME=str(env / "hf"))
    dry = run_cli(["models", "gc", "--dry-run"], env_vars)
    assert dry.code == 0 and all(str(path) in dry.out for path in garbage)
    assert "would free" in dry.stderr and all(path.exists() for path in garbage)
    done = run_cli(["models", "gc"], env_vars)
    assert done.code == 0 and "freed" in done.stderr
    assert not any(path.exists() for path in garbage)
    assert live_temp.exists() and (blobs / "fresh.incomplete").exists() and recent.exists()
    hub.verify_model(good)
    assert find_garbage() == [] and collect([]) == 0
    empty = run_cli(["models", "gc"], env_vars)
    assert empty.code == 0 and empty.out == "" and "nothing to remove" in empty.stderr


def test_list_shows_size_and_origin_per_quant(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch, source_checkpoint: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv(catalog.CONVERTED_REPOS_ENV, f"0.6b-custom={REPO}")
    hub.resolve_model("0.6b-custom", QUANT)
    loopback.add_repo(OFFICIAL, source_checkpoint)
    hub.resolve_model("0.6b-custom", "q8_0", convert=FakeConverter(), convert_locally=True)
    listed = {(m.name, m.quant): m for m in hub.list_models()}
    assert listed[("0.6b-custom", QUANT)].origin.startswith(f"downloaded converted ({REPO}@")
    assert listed[("0.6b-custom", "q8_0")].origin == "converted here"

    env_vars = cli_env(tmp_path, QWEN3TTS_CACHE=str(env / "cache"))
    table = run_cli(["models", "list"], env_vars).out.splitlines()
    rows = [line.split() for line in table if line.startswith("0.6b-custom")]
    assert [row[2] for row in rows] == [QUANT, "q8_0"] or [row[2] for row in rows] == ["q8_0", QUANT]
    assert all(row[4] == "MB" for row in rows)
    as_json = run_cli(["models", "list", "--json"], env_vars).json()
    installed = {m["name"]: m["installed"] for m in as_json["models"]}["0.6b-custom"]
    assert {i["quant"]: i["origin"] == "converted here" for i in installed} == {QUANT: False, "q8_0": True}
    assert all(i["size_bytes"] > 0 for i in installed)


def test_path_and_rm_take_hf_references(env: Path, loopback: LoopbackHub, tmp_path: Path) -> None:
    path = hub.resolve_model(_ref()).path
    env_vars = cli_env(tmp_path, QWEN3TTS_CACHE=str(env / "cache"))
    shown = run_cli(["models", "path", f"hf:{REPO}", "-q", QUANT], env_vars)
    assert shown.code == 0 and Path(shown.out.strip()) == path
    assert hub.remove_model(f"hf:{REPO}:q8_0") == []
    assert hub.remove_model(f"hf:{REPO}") == [path] and not path.exists()


def test_transfer_meter_draws_bytes_and_rate_only_when_enabled() -> None:
    import io

    done = iter(range(0, 10**9, 4_000_000))
    stream = io.StringIO()
    with hub_repos.TransferMeter(
        "me/x q8_0", 3_100_000_000, lambda: next(done), enabled=True, stream=stream, interval=0.01
    ):
        time.sleep(0.1)
    text = stream.getvalue()
    assert "\rme/x q8_0: " in text and " of 3.1 GB, " in text and "/s\x1b[K" in text
    assert text.endswith("\r\x1b[K")  # the line is cleared at the end
    quiet = io.StringIO()
    with hub_repos.TransferMeter("x", 1, lambda: 0, enabled=False, stream=quiet, interval=0.01):
        time.sleep(0.05)
    assert quiet.getvalue() == ""


def test_official_download_checks_disk_space_first(
    env: Path, loopback: LoopbackHub, source_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback.add_repo(OFFICIAL, source_checkpoint)
    needed = sum(
        (source_checkpoint / rel).stat().st_size
        for rel in hub.ALLOW_PATTERNS
        if (source_checkpoint / rel).is_file()
    )
    monkeypatch.setattr(disk_space, "free_bytes", lambda _path: needed - 1)
    with pytest.raises(Qwen3TTSError) as info:
        hub.pull_model("0.6b-custom", convert=FakeConverter())
    assert f"needs {hub_repos.gigabytes(needed)}" in info.value.message and "free at" in info.value.message
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in loopback.requests)
    monkeypatch.setattr(disk_space, "free_bytes", lambda _path: needed)
    hub.verify_model(hub.pull_model("0.6b-custom", convert=FakeConverter()))


def test_unreachable_hub_is_a_clear_error(env: Path, loopback: LoopbackHub) -> None:
    loopback.stop()
    with pytest.raises(Qwen3TTSError, match=f"cannot reach .* to download {REPO}"):
        hub.resolve_model(_ref())


def test_speakers_of_a_converted_repo_come_from_its_config(loopback: LoopbackHub, tmp_path: Path) -> None:
    env = cli_env(tmp_path, HF_ENDPOINT=loopback.url, HF_HUB_OFFLINE="0")
    result = run_cli(["speakers", "--model", _ref(), "--json"], env)
    assert result.code == 0, result.stderr
    config = json.loads((tmp_path / "cache" / "hub" / "me--tiny-cv" / QUANT / "config.json").read_text())
    expected = list(config["talker_config"]["spk_id"])
    assert [s["name"] for s in result.json()["speakers"]] == expected and expected


def test_a_named_revision_is_looked_up_once_and_a_new_commit_is_fetched(
    env: Path, loopback: LoopbackHub, repo_folder: Path
) -> None:
    first = hub.resolve_model(_ref())
    commit = loopback.repos[REPO].commit
    before = _gets(loopback, BIG)
    pinned = hub.resolve_model(f"hf:{REPO}@main:{QUANT}")  # same commit: no download, name remembered
    assert pinned.path == first.path and _gets(loopback, BIG) == before
    assert hub_repos.read_origin(first.path)["requested"] == "main"
    requests = len(loopback.requests)
    hub.resolve_model(f"hf:{REPO}@main:{QUANT}")
    hub.resolve_model(f"hf:{REPO}@{commit}:{QUANT}")
    assert len(loopback.requests) == requests  # both names are known now: zero requests

    data = (repo_folder / QUANT / "config.json").read_bytes()
    new_commit = loopback.replace_file(REPO, f"{QUANT}/README-extra.txt", data)  # the repo moved on
    again = hub.resolve_model(f"hf:{REPO}@{new_commit}:{QUANT}")
    assert hub_repos.read_origin(again.path)["revision"] == new_commit
    hub.verify_model(again.path)


def test_say_uses_the_catalogs_converted_repo_unless_told_to_convert_locally(
    loopback: LoopbackHub, tmp_path: Path, source_checkpoint: Path
) -> None:
    loopback.add_repo(OFFICIAL, source_checkpoint)
    say = ["say", "Hi", "--model", "0.6b-custom", "-q", QUANT, "--max-frames", "2", "-t", "1", "--greedy"]
    for local in (False, True):
        home = tmp_path / ("local" if local else "repo")
        home.mkdir()
        env = cli_env(home, HF_ENDPOINT=loopback.url, HF_HUB_OFFLINE="0")
        env[catalog.CONVERTED_REPOS_ENV] = f"0.6b-custom={REPO}"
        before = len(loopback.requests)
        result = run_cli([*say, "-o", home / "hi.wav", *(["--convert-locally"] if local else [])], env)
        assert result.code == 0, result.stderr
        folder = home / "cache" / "models" / "0.6b-custom" / QUANT
        origin = hub_repos.describe_origin(folder)
        expected = "converted here" if local else f"downloaded converted ({REPO}@"
        assert origin.startswith(expected), origin
        asked = [r.path for r in loopback.requests[before:]]
        assert any(f"/{REPO}/" in p for p in asked) != local
        assert any(OFFICIAL in p for p in asked) == local
        assert len(read_pcm16(home / "hi.wav")) == 2 * spec.SAMPLES_PER_FRAME
