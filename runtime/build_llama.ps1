<#
.SYNOPSIS
Build (or reuse) a llama-cpp-python wheel for one backend on Windows, then print its path.

.DESCRIPTION
    runtime\build_llama.ps1 [cpu|cpu-native|cuda|vulkan] [WHEEL_CACHE_DIR]
    pip install (runtime\build_llama.ps1 cuda)

The Windows twin of runtime/build_llama.sh: the same backends (less metal and openblas), the same flags, the
same cache layout (BACKEND-KEY folders, KEY = first 16 hex digits of sha256("VERSION|FLAGS|OS ARCH|(3, N)")).
Only a finished build is published: pip writes into DEST.tmp, which is renamed to DEST at the end. The wheel
path is the only line on stdout; everything else goes to stderr. Exit codes: 0 done, 2 unknown or
unsupported backend, 1 no Python, otherwise pip's own.

Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), LLAMA_EXTRA_CMAKE_ARGS (appended to the flags and
part of the key), QWEN3TTS_WHEEL_CACHE (default %LOCALAPPDATA%\qwen3tts\wheels), PYTHON (default python).
Needs the MSVC C++ build tools (Visual Studio Build Tools, "Desktop development with C++"); cuda needs the
CUDA toolkit (CUDA_PATH), vulkan the Vulkan SDK (VULKAN_SDK).
#>
param(
    [Parameter(Position = 0)][string]$Backend = "cpu",
    [Parameter(Position = 1)][string]$Cache = ""
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version 3

# backend -> CMake flags, as in build_llama.sh (tests/test_build_llama_ps1.py keeps the two in step).
# cpu: native ISA. The AMX crash that build_llama.sh works around (ggml-org/llama.cpp#20824) cannot be
# detected from here without a CPUID tool; the engine's own guard (no AMX buffers when llama.cpp reports
# AMX_INT8 = 1) covers such a build.
$BackendFlags = [ordered]@{
    "cpu"        = "-DGGML_NATIVE=ON"
    "cpu-native" = "-DGGML_NATIVE=ON"
    "cuda"       = "-DGGML_CUDA=on"
    "vulkan"     = "-DGGML_VULKAN=on"
}
# build_llama.sh backends this script refuses, with the reason
$NotOnWindows = [ordered]@{
    "metal"    = "Metal is Apple's GPU API (macOS only)"
    "openblas" = "OpenBLAS is not set up for MSVC builds here (the cpu backend is as fast for this model)"
}

function Say([string]$Message) {
    [Console]::Error.WriteLine($Message)
}

function Get-CacheKey([string]$Text) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        $digest = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text))
    } finally {
        $sha.Dispose()
    }
    return (-join ($digest | ForEach-Object { $_.ToString("x2") })).Substring(0, 16)
}

function Find-Wheel([string]$Folder, [string]$Version) {
    if (-not (Test-Path -LiteralPath $Folder -PathType Container)) { return $null }
    $found = Get-ChildItem -LiteralPath $Folder -Filter "llama_cpp_python-$Version-*.whl" -File |
        Sort-Object Name | Select-Object -First 1
    if ($null -eq $found) { return $null }
    return $found.FullName
}

$Backend = $Backend.ToLowerInvariant()
if ($NotOnWindows.Contains($Backend)) {
    Say "backend '$Backend' is not available on Windows: $($NotOnWindows[$Backend]) (use $($BackendFlags.Keys -join ', '))"
    exit 2
}
if (-not $BackendFlags.Contains($Backend)) {
    Say "unknown backend '$Backend' (use $($BackendFlags.Keys -join ', '))"
    exit 2
}
$Flags = $BackendFlags[$Backend]
# Extra CMake flags (part of the cache key), e.g. a Vulkan SDK in an unusual place:
#   $env:LLAMA_EXTRA_CMAKE_ARGS = "-DVulkan_INCLUDE_DIR=D:/VulkanSDK/Include"; runtime\build_llama.ps1 vulkan
if ($env:LLAMA_EXTRA_CMAKE_ARGS) { $Flags = "$Flags $($env:LLAMA_EXTRA_CMAKE_ARGS)" }

$Version = if ($env:LLAMA_CPP_PYTHON_VERSION) { $env:LLAMA_CPP_PYTHON_VERSION } else { "0.3.36" }
$Py = if ($env:PYTHON) { $env:PYTHON } else { "python" }
if (-not $Cache) { $Cache = $env:QWEN3TTS_WHEEL_CACHE }
if (-not $Cache) {
    $base = if ($env:LOCALAPPDATA) { $env:LOCALAPPDATA } else { Join-Path $HOME ".cache" }
    $Cache = Join-Path (Join-Path $base "qwen3tts") "wheels"
}

# "OS ARCH" and the Python version from the Python that builds: on Linux these are `uname -sm` and the
# same "(3, N)" as build_llama.sh; on Windows "Windows AMD64" (or x86 for a 32-bit Python, whose wheel differs)
$facts = $null
try {
    $facts = @(& $Py -c "import platform, sys; print(platform.system(), platform.machine()); print(sys.version_info[:2])")
} catch {
    $facts = $null
}
if ($null -eq $facts -or $LASTEXITCODE -ne 0 -or $facts.Count -lt 2) {
    Say "cannot run Python as '$Py' (install Python 3.10+ and put it on PATH, or set `$env:PYTHON)"
    exit 1
}
$OsArch = $facts[0].Trim()
$PyVersion = $facts[1].Trim()

$Key = Get-CacheKey "$Version|$Flags|$OsArch|$PyVersion"
$Dest = Join-Path $Cache "$Backend-$Key"
$Wheel = Find-Wheel $Dest $Version
if (-not $Wheel) {
    $Tmp = "$Dest.tmp"
    if (Test-Path -LiteralPath $Tmp) { Remove-Item -LiteralPath $Tmp -Recurse -Force }  # a killed build's
    New-Item -ItemType Directory -Path $Tmp -Force | Out-Null
    if ($Backend -eq "cuda" -and -not $env:CUDA_PATH) {
        Say "warning: CUDA_PATH is not set; the cuda build needs the CUDA toolkit installed"
    }
    if ($Backend -eq "vulkan" -and -not $env:VULKAN_SDK) {
        Say "warning: VULKAN_SDK is not set; the vulkan build needs the Vulkan SDK installed"
    }
    Say "building llama-cpp-python $Version for '$Backend' ($Flags); this compiles llama.cpp and takes minutes"
    $saved = $env:CMAKE_ARGS
    $env:CMAKE_ARGS = $Flags
    try {
        # pip's stdout goes to our stderr: stdout carries only the wheel path
        & $Py -m pip wheel --no-cache-dir --no-deps -w $Tmp "llama-cpp-python==$Version" |
            ForEach-Object { Say "$_" }
        $code = $LASTEXITCODE
    } finally {
        $env:CMAKE_ARGS = $saved  # the caller's session keeps its own value
    }
    if ($code -ne 0) {
        Say "pip wheel failed (exit $code): see above; a C++ compiler is needed (Visual Studio Build Tools, 'Desktop development with C++')"
        exit $code
    }
    if (Test-Path -LiteralPath $Dest) { Remove-Item -LiteralPath $Dest -Recurse -Force }
    Move-Item -LiteralPath $Tmp -Destination $Dest  # publish only a finished build
    $Wheel = Find-Wheel $Dest $Version
    if (-not $Wheel) {
        Say "pip reported success but no llama_cpp_python-$Version wheel is in $Dest"
        exit 1
    }
}
Write-Output $Wheel
