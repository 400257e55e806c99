#!/usr/bin/env bash
# Smoke-test a built wheel as a user gets it: a fresh venv, no Rust toolchain on PATH, the
# wheel installed (never built from source), then a few checks run against the installed copy.
#
#   bash scripts/wheel_smoke.sh dist/flowcraft_fast-*-manylinux_2_17_x86_64.whl
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="$1"
python="${PYTHON:-python3}"
venv="${FLOWCRAFT_SMOKE_VENV:-target/wheel-smoke}"

# PATH without cargo/rustup, and proof of it: the wheel must not need them.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '\.cargo' -e 'rustup' | paste -sd: -)"
export PATH
unset CARGO_HOME RUSTUP_HOME
if command -v cargo >/dev/null 2>&1 || command -v rustc >/dev/null 2>&1; then
    echo "!! a Rust toolchain is still on PATH" >&2
    exit 1
fi
pypath="$(command -v "$python")"
echo "==> fresh venv $venv (no cargo, no rustc on PATH)"
rm -rf "$venv"
"$pypath" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "==> pip install $(basename "$wheel")[test] (binary only)"
"$venv/bin/python" -m pip install --quiet --only-binary flowcraft-fast "${wheel}[test]"

cd "$venv"   # away from the checkout: python/ must not shadow the installed package
bin="$PWD/bin"
"$bin/python" - <<'PY'
import sys
import flowcraft_fast, flowcraft_fast._core as core
assert "site-packages" in flowcraft_fast.__file__, flowcraft_fast.__file__
assert flowcraft_fast.__version__ == core.__version__, (flowcraft_fast.__version__, core.__version__)
print("import ok:", flowcraft_fast.__file__, flowcraft_fast.__version__)
from flowcraft_fast.dashboard.page import PAGE  # package data: the dashboard's page
assert "<svg" in PAGE or "svg" in PAGE, "dashboard page.html missing from the wheel"
print("dashboard page ok:", len(PAGE), "characters")
PY
"$bin/flowcraft-fastd" --version
"$bin/flowcraft-fast" --version
"$bin/flowcraft-fast" --help >/dev/null && echo "flowcraft-fast --help ok"
"$bin/flowcraft-fastd" --help >/dev/null && echo "flowcraft-fastd --help ok"
cd - >/dev/null
"$venv/bin/flowcraft-fast" validate examples/blueprints/order-review.json

echo "==> conformance in memory, one distributed case, the boot wait, against the wheel"
# tests/ has no __init__.py: pytest puts tests/ (not the repository root) on sys.path, so
# flowcraft_fast comes from the venv's site-packages (asserted above and by the import below).
"$venv/bin/python" -m pytest -p no:cacheprovider -q \
    tests/conformance/test_memory.py \
    "tests/conformance/test_distributed.py::test_case_distributed[chain3]" \
    "tests/conformance/test_distributed.py::test_case_distributed[condition]" \
    tests/daemon/test_daemon_boot_wait.py::test_a_stop_while_waiting_exits_0 \
    tests/unit/test_version.py
