#!/usr/bin/env bash
# One entry point for the README's commands and CI.
#
#   bash scripts/dev.sh demo            build, install, run the demo workflow (own Redis)
#   bash scripts/dev.sh test [ARGS]     build a wheel, install it with test extras, run pytest ARGS
#   bash scripts/dev.sh lint            ruff, mypy (strict) and stubtest on the installed package
#
# Everything happens in a virtual environment ($FLOWCRAFT_VENV, default .venv). The package is
# always built through the normal `pip wheel` / `pip install` path, so what is tested is what a
# user installs. Tests and the demo start their own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FLOWCRAFT_VENV:-.venv}"
python="${PYTHON:-python3}"

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        echo "==> creating virtual environment $venv"
        "$python" -m venv "$venv"
    fi
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
    python -m pip install --quiet --upgrade pip
}

# Build the wheel (Rust extension via maturin) and install it with the given extras.
install_package() {
    local extras="$1" wheeldir
    wheeldir="$(mktemp -d)"
    echo "==> building the wheel (pip wheel .)"
    python -m pip wheel --quiet --no-deps --wheel-dir "$wheeldir" .
    local wheel
    wheel="$(ls "$wheeldir"/flowcraft_fast-*.whl)"
    echo "==> installing $(basename "$wheel")[$extras]"
    python -m pip uninstall --quiet --yes flowcraft-fast >/dev/null 2>&1 || true
    python -m pip install --quiet "${wheel}[${extras}]"
    rm -rf "$wheeldir"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        ensure_venv
        install_package "server"
        # Run from outside the checkout so the installed package is what gets imported.
        (cd examples && python demo.py "$@")
        ;;
    test)
        ensure_venv
        install_package "test"
        python -m pytest "$@"
        ;;
    lint)
        ensure_venv
        install_package "dev"
        echo "==> ruff"
        paths=()
        for d in python tests benches examples; do [ -d "$d" ] && paths+=("$d"); done
        python -m ruff check "${paths[@]}"
        python -m ruff format --check "${paths[@]}"
        echo "==> mypy --strict"
        python -m mypy
        echo "==> stubtest (python/flowcraft_fast/_core.pyi against the built module)"
        python -m mypy.stubtest flowcraft_fast._core
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test|lint [args]" >&2
        exit 2
        ;;
esac
