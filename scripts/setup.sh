#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with siamface, its service, ONNX and PostgreSQL extras and
# its dev tools.
# torch==2.13.0 (CPU) is pinned in pyproject.toml; pip takes it from the local wheel store where there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,serve,onnx,postgres]'
.venv/bin/python -c "import siamface, torch; print('siamface', siamface.__version__, 'torch', torch.__version__)"
