#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with idgenrec installed (editable) and its test extras.
# On a machine without an NVIDIA GPU it installs a CPU build of torch first, so pip never pulls the multi-GB CUDA
# build; on GPU machines it leaves the choice of torch to pip (or to an already installed torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" install "torch>=2.2"
  else
    # A local CPU wheel (find-links) when the machine has one, else PyTorch's CPU index.
    "${PIP[@]}" install "${TORCH_CPU_SPEC:-torch==2.13.0+cpu}" 2>/dev/null \
      || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${PIP[@]}" install -e ".[test]"
echo "idgenrec set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
