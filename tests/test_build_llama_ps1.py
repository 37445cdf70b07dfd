"""runtime/build_llama.ps1 against runtime/build_llama.sh, without PowerShell.

No PowerShell can be installed on this machine (see runtime/WINDOWS.md), so the script is parsed (the
tree-sitter PowerShell grammar: no syntax errors) and its backend table, defaults, pip command and cache key
are compared with the shell script's, which runs for real here with a stand-in pip.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import tree_sitter
import tree_sitter_powershell

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"
PS1 = (RUNTIME / "build_llama.ps1").read_text(encoding="utf-8")
SH = (RUNTIME / "build_llama.sh").read_text(encoding="utf-8")
WINDOWS_REFUSES = {"metal", "openblas"}


def _ps1_table(name: str) -> dict[str, str]:
    block = re.search(rf"^\${name} = \[ordered\]@\{{\n(.*?)^\}}", PS1, re.M | re.S)
    assert block, f"${name} table not found in build_llama.ps1"
    return dict(re.findall(r'^\s*"([a-z-]+)"\s*=\s*"([^"]*)"', block.group(1), re.M))


def _sh_backends() -> dict[str, str]:
    """backend -> flags of the case statement (cpu: the flags on a CPU without AMX, its last assignment)."""
    body = SH[SH.index('case "$BACKEND" in') : SH.index("esac")]
    arms = re.split(r"^\s*([a-z-]+)\)", body, flags=re.M)[1:]
    return {
        name: re.findall(r'FLAGS="(-D[^"$]*)"', arm)[-1]
        for name, arm in zip(arms[::2], arms[1::2], strict=True)
    }


def test_ps1_parses_without_syntax_errors() -> None:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    tree = parser.parse(PS1.encode("utf-8"))
    bad = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            bad.append(f"line {node.start_point[0] + 1}: {node.text[:60]!r}")
        stack.extend(node.children)
    assert not tree.root_node.has_error and bad == [], bad
    broken = parser.parse(PS1.replace("exit 2\n}", "exit 2\n", 1).encode("utf-8"))
    assert broken.root_node.has_error  # the check can fail: a lost brace is seen


def test_backends_and_flags_match_the_shell_script() -> None:
    sh = _sh_backends()
    ps1 = _ps1_table("BackendFlags")
    refused = _ps1_table("NotOnWindows")
    assert set(sh) == {"cpu", "cpu-native", "openblas", "cuda", "vulkan", "metal"}
    assert set(refused) == WINDOWS_REFUSES and all(refused.values())
    assert set(ps1) | set(refused) == set(sh) and not set(ps1) & set(refused)
    assert ps1 == {name: sh[name] for name in ps1}  # cpu: GGML_NATIVE=ON, as the shell's non-AMX case


def test_defaults_environment_and_pip_command_match() -> None:
    sh_version = re.search(r"LLAMA_CPP_PYTHON_VERSION:-([0-9.]+)", SH)
    ps1_version = re.search(
        r'LLAMA_CPP_PYTHON_VERSION\) \{ \$env:LLAMA_CPP_PYTHON_VERSION \} else \{ "([0-9.]+)"', PS1
    )
    assert sh_version and ps1_version and sh_version.group(1) == ps1_version.group(1)
    for variable in ("QWEN3TTS_WHEEL_CACHE", "LLAMA_EXTRA_CMAKE_ARGS", "LLAMA_CPP_PYTHON_VERSION", "PYTHON"):
        assert f"${{{variable}" in SH and f"$env:{variable}" in PS1, variable
    pip = "-m pip wheel --no-cache-dir --no-deps -w"
    assert pip in SH and pip in PS1
    assert '"llama-cpp-python==$Version"' in PS1 and '"llama-cpp-python==$VERSION"' in SH
    assert "exit 2" in SH and PS1.count("exit 2") == 2  # unknown and refused backends: usage errors
    assert '"$Dest.tmp"' in PS1 and "Move-Item -LiteralPath $Tmp -Destination $Dest" in PS1  # publish whole
    assert "llama_cpp_python-$Version-*.whl" in PS1 and 'llama_cpp_python-"$VERSION"-*.whl' in SH
    assert "Write-Output $Wheel" in PS1 and PS1.count("Write-Output") == 1  # stdout: the wheel path only


def _fake_python(folder: Path) -> Path:
    """A PYTHON for build_llama.sh: the real one for `-c`, a stand-in for `-m pip wheel` that writes a
    wheel file and logs CMAKE_ARGS (no compiler run)."""
    script = folder / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then exec "{sys.executable}" "$@"; fi\n'
        'while [ "$1" != "-w" ]; do shift; done\n'
        'echo "$CMAKE_ARGS" >> "$(dirname "$0")/builds.log"\n'
        'touch "$2/llama_cpp_python-0.3.36-cp3-cp3-linux_x86_64.whl"\n'
        'echo "pip output"\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def _run_sh(backend: str, cache: Path, python: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_", "QWEN3TTS_"))}
    return subprocess.run(
        ["bash", str(RUNTIME / "build_llama.sh"), backend, str(cache)],
        env={**environ, "PYTHON": str(python), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cache_key_is_the_shell_scripts_for_the_same_inputs(tmp_path: Path) -> None:
    python = _fake_python(tmp_path)
    cache = tmp_path / "wheels"
    built = _run_sh("cpu-native", cache, python)
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip())
    assert built.stdout.count("\n") == 1 and "pip output" in built.stderr  # stdout: the path alone
    sh_key = wheel.parent.name.removeprefix("cpu-native-")

    # the ps1's key: its own Python probe and key template, filled in the same way
    probe = re.search(r'& \$Py -c "([^"]+)"', PS1)
    template = re.search(r'\$Key = Get-CacheKey "([^"]+)"', PS1)
    assert probe and template and template.group(1) == "$Version|$Flags|$OsArch|$PyVersion"
    os_arch, py_version = subprocess.run(
        [sys.executable, "-c", probe.group(1)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert os_arch == subprocess.run(["uname", "-sm"], capture_output=True, text=True).stdout.strip()
    text = (
        template.group(1)
        .replace("$Version", "0.3.36")
        .replace("$Flags", _ps1_table("BackendFlags")["cpu-native"])
        .replace("$OsArch", os_arch)
        .replace("$PyVersion", py_version)
    )
    assert hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] == sh_key

    again = _run_sh("cpu-native", cache, python)  # cache hit: the same path, no second build
    assert again.stdout == built.stdout and "building" not in again.stderr
    assert (tmp_path / "builds.log").read_text().splitlines() == ["-DGGML_NATIVE=ON"]
    extra = _run_sh("cpu-native", cache, python, LLAMA_EXTRA_CMAKE_ARGS="-DX=1")  # flags change the key
    assert extra.returncode == 0 and Path(extra.stdout.strip()).parent != wheel.parent
    assert not list(cache.glob("*.tmp"))  # builds were published whole
