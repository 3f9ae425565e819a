#!/usr/bin/env bash
# The GPU check (README, "GPU check"), from the repository root of a fresh clone on a machine with a CUDA GPU:
#
#   benchmark/gpu_check.sh [OUT_DIR]      # default OUT_DIR: gpu-check
#
# 1. stops at once, exit code 2, when no CUDA device is present;
# 2. installs patchbench and what this machine lacks: `pip install -e .[test]` under constraints.txt, except that
#    packages already installed keep their version (the machine's own CUDA build of torch stays). Offline, put
#    wheels of the missing packages in a folder and name it in WHEELS (default: .whl when it exists);
# 3. runs the `gpu` tests (pytest -m gpu), log in OUT_DIR/gpu_tests.log;
# 4. runs python -m patchbench.benchmark.gpu_check: each method at ViT-S/16, 224 px, bf16, eager and compiled,
#    and the host-synchronisation check; OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md.
# All of it within 8 minutes (TOTAL_S, default 480). PYTHON picks the interpreter (default python3).
# Exit code: 0 when every step passed, 1 when a test or a case failed (the figures are still written), 2 without
# a CUDA device or when the install fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
TOTAL_S=${TOTAL_S:-480}
stop() { echo "gpu_check: $*" >&2; exit 2; }

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
    && ! nvidia-smi -L >/dev/null 2>&1; then
  stop "no CUDA device is present (torch.cuda.is_available() is False under $PYTHON and nvidia-smi lists no GPU); run it on a machine with an NVIDIA GPU"
fi
mkdir -p "$OUT"

if ! "$PYTHON" -c 'import patchbench.benchmark.gpu_check' 2>/dev/null; then
  # constraints.txt's pins for what is missing, the installed version for what is there.
  "$PYTHON" - constraints.txt >"$OUT/constraints-here.txt" <<'EOF' || stop "could not read constraints.txt"
import sys
from importlib import metadata

for line in open(sys.argv[1]):
    name = line.split("==")[0].strip()
    if name:
        try:
            print(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(line.strip())
EOF
  args=(-c "$OUT/constraints-here.txt")
  [ -d "$WHEELS" ] && args+=(--no-index --find-links "$WHEELS")
  # setuptools >= 77 (pyproject's build requirement) already here: build without fetching it.
  "$PYTHON" -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null \
    && args+=(--no-build-isolation)
  "$PYTHON" -m pip install -q "${args[@]}" -e ".[test]" >"$OUT/install.log" 2>&1 \
    || stop "installing patchbench failed (log: $OUT/install.log); without network, put wheels of the missing packages in WHEELS=$WHEELS"
fi

status=0
timeout 150 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests >"$OUT/gpu_tests.log" 2>&1 || status=1
tail -n 1 "$OUT/gpu_tests.log"

budget=$((TOTAL_S - SECONDS - 45))  # what is left, less a margin for the last case to finish
((budget > 60)) || budget=60
timeout $((budget + 40)) "$PYTHON" -m patchbench.benchmark.gpu_check --out "$OUT" --budget-s "$budget" || status=$?
exit "$status"
