#!/usr/bin/env bash
# Release build: stripped abi3 wheels tagged manylinux_2_17 (manylinux2014) and an sdist, in dist/.
#
#   bash scripts/release.sh [x86_64] [aarch64] [sdist]    (default: all three)
#
# How: maturin cross-links with zig (`pip install ziglang`), which ships the glibc 2.17 symbol
# versions, so the wheels run on any glibc >= 2.17 (RHEL/CentOS 7+, Debian 8+, Ubuntu 14.04+)
# whatever glibc this machine has; no manylinux container is needed. Rust targets come from
# rustup (`rustup target add aarch64-unknown-linux-gnu`; skipped with a note when it cannot be
# fetched). Every wheel is checked with `auditwheel show` and must report a manylinux tag.
#
# Tools live in their own venv ($FLOWCRAFT_RELEASE_VENV, default target/release-tools) and the
# build in its own cargo target dir (target/release-wheel), so the dev build is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
tools="${FLOWCRAFT_RELEASE_VENV:-target/release-tools}"
out="${FLOWCRAFT_DIST:-dist}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$PWD/target/release-wheel}"
# glibc 2.17: the oldest glibc Rust's std supports (rust-lang RFC 3279 / Rust 1.64), and the
# floor of manylinux2014, which every pip >= 19.3 accepts.
compat="manylinux2014"
glibc="2.17"

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(x86_64 aarch64 sdist)

if [ ! -x "$tools/bin/python" ]; then
    echo "==> creating the release tools venv $tools"
    "$python" -m venv "$tools"
fi
"$tools/bin/python" -m pip install --quiet --upgrade pip
"$tools/bin/python" -m pip install --quiet "maturin>=1.7,<2" "ziglang>=0.13,<0.14" "auditwheel>=6"
export PATH="$PWD/$tools/bin:$PATH"   # maturin finds zig through `python -m ziglang`
mkdir -p "$out"

build_wheel() {
    local arch="$1" triple="$1-unknown-linux-gnu"
    if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        echo "==> rustup target add $triple"
        if ! rustup target add "$triple"; then
            echo "!! skipping $arch: the Rust standard library for $triple cannot be fetched" >&2
            return 0
        fi
    fi
    echo "==> wheel for $arch (abi3, $compat = glibc $glibc, stripped, zig linker)"
    maturin build --release --strip --zig --target "$triple" --compatibility "$compat" \
        --out "$out" --quiet
    local wheel
    wheel="$(ls -t "$out"/flowcraft_fast-*manylinux_2_17_"$arch".whl | head -1)"
    echo "==> auditwheel show $(basename "$wheel")"
    auditwheel show "$wheel" | tee "$out/auditwheel-$arch.txt"
    grep -q "manylinux_2_17_$arch" "$out/auditwheel-$arch.txt" || {
        echo "!! $wheel is not manylinux_2_17_$arch compatible" >&2
        exit 1
    }
    ls -l "$wheel"
}

for target in "${targets[@]}"; do
    case "$target" in
        x86_64 | aarch64) build_wheel "$target" ;;
        sdist)
            echo "==> sdist"
            maturin sdist --out "$out"
            ;;
        *) echo "usage: bash scripts/release.sh [x86_64] [aarch64] [sdist]" >&2; exit 2 ;;
    esac
done
ls -l "$out"
