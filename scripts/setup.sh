#!/usr/bin/env bash
# Install what soustitre needs to build, test and run on Debian 12 (bookworm).
#
# Idempotent: every step checks first and only does what is missing, saying what it does.
#
#   scripts/setup.sh              all steps: --rust --system --ort --python
#   scripts/setup.sh --system     Debian packages (GStreamer 1.22 -dev + plugins, pkg-config, pip,
#                                 chromium + chromium-driver for the browser test)
#   scripts/setup.sh --ort        ONNX Runtime C library -> .local/lib/libonnxruntime.so
#   scripts/setup.sh --python     numpy + num2words for the scorers in ../shared/score
#   scripts/setup.sh --rust       check that cargo (Rust >= 1.95) is there
#   scripts/setup.sh --list build|runtime|dev   print a package list (the Dockerfile uses it)
#
# Models are not fetched here (that needs the binary): `make setup` runs
# `soustitre models fetch --all` after building. The Dockerfile runs `--ort` and `--list`
# from this very script, so the container and a developer machine get the same library and
# the same packages: change them here, not there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build-time packages: headers and pkg-config for the gstreamer-rs crates (features v1_22).
BUILD_PKGS=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    libgstreamer-plugins-bad1.0-dev)
# Run-time plugins: base (audioconvert, audioresample, appsink...), good (wav, rtp...),
# bad (webrtcbin), libav (MP3/AAC/MP4 decoding), nice (ICE for webrtcbin).
RUNTIME_PKGS=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-libav gstreamer1.0-nice)
# Developer and test tools: gst-launch-1.0 / gst-inspect-1.0 for debugging pipelines by hand;
# Chromium and its WebDriver for the viewer page's real-browser test (tests/viewer_browser.rs);
# Janus (a real SFU) and iproute2 for the SFU end-to-end tests (tests/sfu_janus.rs).
DEV_PKGS=(gstreamer1.0-tools chromium chromium-driver janus iproute2)

# ONNX Runtime C library, taken from the PyPI wheel (see ../shared/STACK.md). The `ort` crate's
# `api-31` feature needs a library of minor version >= 31. The wheel is pinned to one platform
# tag and one CPython ABI so that the file, and so its sha256 below, do not depend on the local
# Python: only the one shared library inside is used, and it needs just glibc and libstdc++.
ORT_VERSION=1.31.1
ORT_WHEEL_PYTHON=3.11
ORT_SO="libonnxruntime.so.${ORT_VERSION}"
ORT_MEMBER="onnxruntime/capi/${ORT_SO}"
# sha256 of ${ORT_MEMBER} inside onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_<arch>.whl
declare -A ORT_SHA256=(
    [x86_64]=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
    [aarch64]=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467
)
ORT_DIR="${ROOT}/.local/lib"

PY_MODULES=(numpy num2words)

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: this script targets Debian 12; install by hand: $*"
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

have_pip() { command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; }

step_system() {
    local pkgs=("${BUILD_PKGS[@]}" "${RUNTIME_PKGS[@]}" "${DEV_PKGS[@]}") missing=() p
    command -v dpkg-query >/dev/null 2>&1 \
        || die "dpkg-query not found: this script targets Debian 12; install by hand: ${pkgs[*]}"
    # pip fetches the ONNX Runtime wheel; only add it (and python3) when pip is missing.
    have_pip || pkgs+=(python3 python3-pip)
    for p in "${pkgs[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "Debian packages: all ${#pkgs[@]} present"
    else
        say "Debian packages: ${#missing[@]} of ${#pkgs[@]} missing"
        apt_install "${missing[@]}"
    fi
}

ort_arch() {
    case "$(uname -m)" in
        x86_64 | amd64) echo x86_64 ;;
        aarch64 | arm64) echo aarch64 ;;
        *) die "no pinned ONNX Runtime wheel for $(uname -m) (x86_64 and aarch64 only)" ;;
    esac
}

ort_ok() { # the versioned file is there, has the pinned sha256, and the symlink points at it
    local want=$1
    [ -f "${ORT_DIR}/${ORT_SO}" ] && [ "$(readlink "${ORT_DIR}/libonnxruntime.so" || true)" = "${ORT_SO}" ] \
        && [ "$(sha256sum "${ORT_DIR}/${ORT_SO}" | cut -d' ' -f1)" = "$want" ]
}

step_ort() {
    local arch want tmp wheel got
    arch=$(ort_arch)
    want=${ORT_SHA256[$arch]}
    if ort_ok "$want"; then
        say "ONNX Runtime ${ORT_VERSION}: present (.local/lib/${ORT_SO}, sha256 ok)"
        return
    fi
    have_pip || die "python3 -m pip is needed to fetch the ONNX Runtime wheel (run: $0 --system)"
    say "ONNX Runtime ${ORT_VERSION}: fetching the ${arch} wheel from PyPI with pip"
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    python3 -m pip download --no-deps --only-binary=:all: --progress-bar off \
        --platform "manylinux_2_28_${arch}" --python-version "${ORT_WHEEL_PYTHON}" \
        --implementation cp --abi "cp${ORT_WHEEL_PYTHON/./}" \
        --dest "$tmp" "onnxruntime==${ORT_VERSION}"
    wheel=$(find "$tmp" -maxdepth 1 -name "onnxruntime-${ORT_VERSION}-*.whl" | head -n 1)
    [ -n "$wheel" ] || die "pip did not leave an onnxruntime ${ORT_VERSION} wheel in $tmp"
    note "extracting ${ORT_MEMBER} from $(basename "$wheel")"
    python3 - "$wheel" "$ORT_MEMBER" "$tmp/${ORT_SO}" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    got=$(sha256sum "$tmp/${ORT_SO}" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "sha256 mismatch for ${ORT_SO}: got $got, want $want"
    mkdir -p "$ORT_DIR"
    chmod 0644 "$tmp/${ORT_SO}"
    mv -f "$tmp/${ORT_SO}" "${ORT_DIR}/${ORT_SO}"
    ln -sfn "${ORT_SO}" "${ORT_DIR}/libonnxruntime.so" # relative: survives a move or a COPY
    rm -rf "$tmp"
    trap - EXIT
    say "ONNX Runtime ${ORT_VERSION}: installed .local/lib/libonnxruntime.so -> ${ORT_SO} (sha256 ok)"
}

step_python() {
    local mods
    mods=$(IFS=,; echo "${PY_MODULES[*]}")
    command -v python3 >/dev/null 2>&1 || die "python3 not found (run: $0 --system)"
    if python3 -c "import ${mods}" >/dev/null 2>&1; then
        say "Python scorer modules (${PY_MODULES[*]}): present for $(command -v python3)"
        return
    fi
    # Debian's own python3 refuses `pip install` outside a venv (PEP 668); Debian packages
    # both modules, so use apt for it. Any other python3 (venv, pyenv...) gets pip.
    if python3 -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
        say "Python scorer modules: installing with apt for Debian's python3"
        apt_install python3-numpy python3-num2words
    else
        have_pip || die "python3 -m pip is missing for $(command -v python3)"
        local user=()
        if [ "$(id -u)" -ne 0 ] && python3 -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
            user=(--user)
        fi
        say "Python scorer modules: pip install ${user[*]} ${PY_MODULES[*]}"
        python3 -m pip install --progress-bar off "${user[@]}" "${PY_MODULES[@]}"
    fi
    python3 -c "import ${mods}" || die "python3 still cannot import ${mods}"
}

step_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
            die "cargo is installed in ~/.cargo/bin but not on PATH: run '. \"\$HOME/.cargo/env\"' and retry"
        fi
        die "cargo not found: install Rust >= 1.95 (rustup, https://rustup.rs) and put cargo on PATH"
    fi
    local ver
    ver=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n' 1.95.0 "${ver%%-*}" | sort -V | head -n 1)" != 1.95.0 ]; then
        die "rustc ${ver} is too old: Cargo.toml needs rust-version 1.95"
    fi
    say "Rust: rustc ${ver}, $(cargo --version | awk '{print $1, $2}')"
    cargo fmt --version >/dev/null 2>&1 || note "warning: rustfmt missing ('make lint' needs it: rustup component add rustfmt)"
    cargo clippy --version >/dev/null 2>&1 || note "warning: clippy missing ('make lint' needs it: rustup component add clippy)"
    if cargo nextest --version >/dev/null 2>&1; then
        note "cargo-nextest: $(cargo nextest --version | head -n 1 | awk '{print $2}') ('make test' uses it)"
    else
        note "cargo-nextest not installed: 'make test' falls back to cargo test"
    fi
}

main() {
    local steps=() arg
    while [ $# -gt 0 ]; do
        arg=$1
        shift
        case "$arg" in
            --system) steps+=(system) ;;
            --ort) steps+=(ort) ;;
            --python) steps+=(python) ;;
            --rust) steps+=(rust) ;;
            --list)
                case "${1:-}" in
                    build) echo "${BUILD_PKGS[*]}" ;;
                    runtime) echo "${RUNTIME_PKGS[*]}" ;;
                    dev) echo "${DEV_PKGS[*]}" ;;
                    *) die "--list takes build, runtime or dev" ;;
                esac
                return ;;
            -h | --help) usage; return ;;
            *) die "unknown argument: $arg (see --help)" ;;
        esac
    done
    [ "${#steps[@]}" -gt 0 ] || steps=(rust system ort python)
    local s
    for s in "${steps[@]}"; do
        "step_$s"
    done
}

main "$@"
