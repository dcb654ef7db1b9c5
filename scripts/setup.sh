#!/usr/bin/env bash
# Set up dinoeval in .venv at the repository root. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# Fashion-MNIST (real data for the tests and the demo's --data fashion-mnist) comes from Debian.
# chromium: the report tests open the HTML pages in a real headless browser.
if { [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null; } \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist chromium) >/dev/null 2>&1 \
        || echo "note: could not install dataset-fashion-mnist/chromium; their tests will be skipped"
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch and torchvision are pinned in pyproject.toml: pip takes them from local wheels.
if ! .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]" > .venv/pip-install.log 2>&1; then
    tail -30 .venv/pip-install.log; echo "setup: pip install failed (full log: .venv/pip-install.log)"; exit 1
fi
.venv/bin/python -c "import dinoeval, torch, faiss; print('dinoeval', dinoeval.__version__, '| torch', torch.__version__)"
