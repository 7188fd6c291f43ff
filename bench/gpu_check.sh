#!/usr/bin/env bash
# Every GPU check of issues 3-5, installing nothing from the network, in stages:
#   tests    GPU-marked tests: Triton kernels and the Newton solver against their naive twins
#   linear   our GLA / delta / diagonal-scan kernels beside flash-linear-attention and
#            accelerated-scan (bench/linear.py)
#   pararnn  ParaGRU Newton (eager, closed-form, fused) beside the eager loop, a compiled loop
#            and cuDNN nn.GRU (bench/pararnn.py)
# Prepare here with bench/gpu_fetch_wheels.sh, then (one device call is 10 minutes at most):
#   run(command="bash bench/gpu_check.sh tests linear", carry=[".whl"], timeout_s=450)
#   run(command="bash bench/gpu_check.sh pararnn", carry=[".whl"], timeout_s=300)
# No stage named: all three (over 10 minutes when nothing is cached). Results land in $OUT
# (tables and JSON); copy them into docs/benchmarks.md with the card's name.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ncd_gpu}
STAGES=${*:-tests linear pararnn}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "carry .whl (bench/gpu_fetch_wheels.sh)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . \
  || { echo "could not install ncd itself"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
REPO=$PWD
# From /tmp, so `import ncd` finds the installed package (the checkout's ncd/ lacks the backends mapping).
(cd /tmp && python3 - <<'PY') 2>&1 | tee "$OUT/env.txt"
import torch, triton, ncd
print("torch", torch.__version__, "triton", triton.__version__, "device", torch.cuda.get_device_name())
PY
for stage in $STAGES; do
  case $stage in
    tests)
      # -v into a file: if the timeout kills pytest, the lines so far still say what passed
      (cd /tmp && timeout 240 python3 -m pytest -v -p no:cacheprovider -m gpu --rootdir "$REPO" \
        "$REPO/tests/kernels" "$REPO/tests/pararnn" > "$OUT/gpu_tests.txt" 2>&1)
      grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/gpu_tests.txt" | tail -40 ;;
    linear)
      timeout 150 python3 bench/linear.py --json "$OUT/linear.json" 2>&1 | tee "$OUT/linear.txt" ;;
    pararnn)
      # The issue-3 target shape first (B16 T4096 N1024: 20x cuDNN GRU, 100x the eager loop),
      # then a long sequence; eager Python loops are skipped above T=4096 (16k steps: minutes).
      timeout 200 python3 bench/pararnn.py --json --no-cpu --cuda-B 16 --cuda-N 1024 \
        --cuda-T 4096 16384 --loop-max-T 4096 > "$OUT/pararnn.json" 2> "$OUT/pararnn.err"
      tail -12 "$OUT/pararnn.err"
      timeout 60 python3 bench/pararnn.py --json --no-cpu --cuda-B 1 --cuda-N 1024 --cuda-T 65536 \
        --loop-max-T 4096 > "$OUT/pararnn_64k.json" 2> "$OUT/pararnn_64k.err"
      tail -4 "$OUT/pararnn_64k.err" ;;
    *) echo "unknown stage $stage (tests, linear, pararnn)"; exit 2 ;;
  esac
done
echo "results in $OUT"
