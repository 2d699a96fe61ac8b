#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels perf/gpu_check.sh needs on a GPU machine whose
# Python has torch but not the rest of this project's dependencies and no internet (Python
# 3.12, x86-64); gpu_check.sh installs whatever .whl/ holds before it starts. The pins are
# pyproject.toml's (tests/perf/test_perf.py keeps them equal) and, for their own dependencies,
# the versions the project's CI installs; the rest they need (tokenizers, safetensors, regex,
# pyarrow, xxhash, fsspec, huggingface-hub) the lent machines' image has (KINDS.md, 2026-11).
#
#   bash perf/gpu_wheels.sh [PYTHON_VERSION]   # here, with PyPI (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.12}
WHEELS=(
  # pyproject.toml: the project's own pins (torch, torchvision and the rest the machine has)
  transformers==5.24.0 timm==1.0.31 datasets==5.2.0 submitit==1.5.4
  # pyproject.toml's fidelity extra: MMSegmentation, the peer figure's other side
  mmsegmentation==1.2.2 mmengine==0.10.7 mmcv-lite==2.1.0 ftfy==6.3.1
  # what those need beyond a machine with PyTorch, NumPy, pandas and Hugging Face's hub
  dill==0.4.1 multiprocess==0.70.19 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9
  termcolor==3.3.0 prettytable==3.19.0 wcwidth==0.9.5
)
PYTHON=${PYTHON:-python3}
rm -rf .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
echo "gpu_wheels: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/; on the GPU" \
  "machine run: bash perf/gpu_check.sh --out DIR (carry .whl)"
