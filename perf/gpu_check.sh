#!/usr/bin/env bash
# One GPU, under 8 minutes: the Table 1 preflight at each recipe's images per GPU (fp32 and bf16
# autocast), the training-step, inference and peer figures (figure 1's options table times bf16
# and deterministic kernels against fp32 at Table 1's HRNet step), and the
# determinism check (repeat and resume bit for bit, deterministic on and off, fp32 and bf16);
# everything is appended to perf/RESULTS.md with the device named. Without a GPU it runs its
# CPU parts at small sizes (the smoke grid's preflight, the figures' --quick mode) and appends
# nothing unless --append. Each part has its own time limit, so the whole stays in budget.
#
# A machine whose Python has torch but not this project's other dependencies (a lent GPU
# machine without internet) gets them as wheels: `bash perf/gpu_wheels.sh` here fills .whl/,
# which this script installs into a temporary folder first when its Python lacks them.
#
#   bash perf/gpu_check.sh            # on a GPU machine (pretrained weights not needed)
#   bash perf/gpu_check.sh --dry      # print the commands only
#   bash perf/gpu_check.sh --append   # without a GPU: append the CPU parts' results too
#   bash perf/gpu_check.sh --out DIR  # also copy perf/RESULTS.md and each part's log to DIR
set -uo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DRY=0
APPEND=0
OUT=""
usage() { echo "usage: bash perf/gpu_check.sh [--dry] [--append] [--out DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --append) APPEND=1 ;;
    --out) case "${2:--}" in -*) usage ;; esac; OUT=$2; shift ;;
    *) usage ;;
  esac
  shift
done
case "$OUT" in /*|"") ;; *) OUT="$CALLER/$OUT" ;; esac  # relative: to where it was called

# carried wheels, for a Python without this project's dependencies (submitit stands for them)
if [ -d .whl ] && [ "$DRY" = 0 ] && ! "$PY" -c "import submitit" 2> /dev/null; then
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    .whl/*.whl || { echo "gpu_check: could not install the wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$DRY" = 1 ]; then
  GPU=${GPU_CHECK_ASSUME_GPU:-0}
elif ! GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))"); then
  echo "gpu_check: $PY cannot import torch; set PYTHON to the interpreter that has it" >&2
  exit 2
fi
if [ "$DRY" = 0 ] && [ "$GPU" = 0 ] && command -v nvidia-smi > /dev/null \
    && nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_check: nvidia-smi sees a GPU but torch does not (a CPU build of torch?)" >&2
  exit 2
fi
if [ "$GPU" = 1 ]; then
  GRID=table1; QUICK=""; NO_APPEND=""; APPEND=1
  LIMITS=(70 70 230 70)  # seconds: 2 preflights, figures, determinism (440 s + 4 x GRACE)
  # cuBLAS reads it once per process: figure 1's deterministic rows need it from the start, so
  # the figures' and the determinism check's processes have it (their machine lines name it);
  # the preflights do not
  CUBLAS="CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
  ENVS=("" "" "$CUBLAS" "$CUBLAS")
  DET_QUICK="--quick"    # 4 steps at 32x32: bitwise repeat and resume need no more
else
  GRID=smoke; QUICK="--quick"; DET_QUICK="--quick"; LIMITS=(300 300 900 600)
  ENVS=("" "" "" "")
  [ "$APPEND" = 1 ] && NO_APPEND="" || NO_APPEND="--no-append"
fi
PREFLIGHT=(run_all.py --grid "$GRID" --preflight --set model.pretrained=none)
COMMANDS=(
  "${PREFLIGHT[*]} --set train.amp=false"
  "${PREFLIGHT[*]} --set train.amp=true"
  "-m perf.run --only train_step --only inference --only peer $QUICK $NO_APPEND"
  "-m perf.determinism $DET_QUICK $NO_APPEND"
)
TITLES=("preflight, fp32" "preflight, bf16 autocast" "figures: training step, inference, peer"
        "determinism: repeat and resume (deterministic on and off)")

GRACE=5
LOG=$(mktemp)
hand_over() {  # what a machine that is given back afterwards must hand over (--out)
  [ -n "$OUT" ] || return 0
  mkdir -p "$OUT"
  cp perf/RESULTS.md "$OUT/RESULTS.md"
  for j in "${!COMMANDS[@]}"; do
    if [ -f "$LOG.$j" ]; then cp "$LOG.$j" "$OUT/part$j.log"; fi
  done
}
FAILED=0
MISSED=0
START=$(date +%s)
for i in "${!COMMANDS[@]}"; do
  echo "=== ${TITLES[$i]}: timeout ${LIMITS[$i]}s+${GRACE}s ${ENVS[$i]:+${ENVS[$i]} }$PY ${COMMANDS[$i]}"
  [ "$DRY" = 1 ] && continue
  # SIGTERM at the limit (a run checkpoints and stops), SIGKILL GRACE s later if still running
  # shellcheck disable=SC2086  # the command lines (and the environment) split on purpose
  timeout -k "$GRACE" "${LIMITS[$i]}" env ${ENVS[$i]} "$PY" ${COMMANDS[$i]} 2>&1 | tee "$LOG.$i"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) ;;
    3) echo "--- ${TITLES[$i]}: ran; some targets missed (FAIL rows above)"
       MISSED=$((MISSED + 1)) ;;
    124|137) echo "--- ${TITLES[$i]}: ran out of its ${LIMITS[$i]} s"; FAILED=$((FAILED + 1)) ;;
    *) echo "--- ${TITLES[$i]}: failed, exit $rc"; FAILED=$((FAILED + 1)) ;;
  esac
  echo "$rc" > "$LOG.$i.rc"
  hand_over  # each part's log as soon as it ends: an outside time limit loses no more
done
[ "$DRY" = 1 ] && exit 0

if [ "$APPEND" = 1 ]; then  # the preflight tables (the figures appended their own sections)
  DEVICE=$("$PY" -c "import torch; c = torch.cuda
print(c.get_device_name(0) if c.is_available() else 'CPU')")
  {
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC'): perf/gpu_check.sh on $DEVICE"
    echo
    echo "Preflight of grid $GRID (one training step + one evaluation forward per cell at the"
    echo "recipe's images per GPU, random weights); $(( $(date +%s) - START )) s in all."
    for i in 0 1; do
      echo
      echo "### ${TITLES[$i]} (exit $(cat "$LOG.$i.rc"))"
      echo
      if grep -q 'preflight of' "$LOG.$i"; then  # each cell as it ended, the table, its notes
        sed -n '/preflight of/,$p' "$LOG.$i"
      else  # it stopped before the first cell: what it said last
        tail -n 20 "$LOG.$i"
      fi
    done
  } >> perf/RESULTS.md
  echo "appended the preflight tables to perf/RESULTS.md"
fi
hand_over
[ -n "$OUT" ] && echo "copied perf/RESULTS.md and the parts' logs to $OUT"
rm -f "$LOG" "$LOG".*
echo "gpu_check: $FAILED part(s) failed or ran out of time, $MISSED missed a target;" \
  "$(( $(date +%s) - START )) s"
[ "$FAILED" = 0 ]
