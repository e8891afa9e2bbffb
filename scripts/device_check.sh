#!/usr/bin/env bash
# The one prepared check of zsgm's GPU path (issue 19) for one H200, in under 8 minutes. See docs/GPU.md.
#
# 1. Here, once (needs pip and the network; writes the ignored folder .whl/):
#        bash scripts/device_check.sh --fetch-wheels
#    downloads the pure-Python packages the device image lacks (open_clip_torch, ftfy, wcwidth, cattrs) and
#    copies the independent check ../shared/tools/gpu_check (if present) into .whl/gpu_check.
# 2. On the device (the device tool's run):  command "bash scripts/device_check.sh", carry [".whl"],
#    timeout_s 540. Results land in $OUT (7 files): summary.txt (environment, per-part status and seconds),
#    pytest.log, bench_ops.log/.json, nada.log/.json, gpu_check.log.
#
# Parts and time budgets (seconds; each also capped by what is left of TOTAL):
#    setup 30 | GPU tests 110 | bench_ops 90 | bench_nada_step 160 | gpu_check (B, C, E) 60  -> TOTAL 450
# A part that fails or runs out of time is recorded and the next part still runs.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
  PY=${PYTHON:-.venv/bin/python}
  mkdir -p .whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 cattrs==26.2.1 || exit 1
  if [ -d ../shared/tools/gpu_check ]; then rm -rf .whl/gpu_check && cp -r ../shared/tools/gpu_check .whl/gpu_check; fi
  du -sh .whl && ls .whl
  exit 0
fi

OUT=${OUT:-./device_out}
mkdir -p "$OUT"
TOTAL=${DEVICE_CHECK_TOTAL:-450}
T0=$(date +%s)
SUMMARY="$OUT/summary.txt"
export PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=/tmp/zsgm_cupy_cache OMP_NUM_THREADS=8
PY=${PYTHON:-python3}

left() { echo $(( TOTAL - ($(date +%s) - T0) )); }

part() {  # part NAME BUDGET LOG command...
  local name=$1 budget=$2 log=$3; shift 3
  local remaining; remaining=$(left)
  if [ "$budget" -gt "$remaining" ]; then budget=$remaining; fi
  if [ "$budget" -lt 10 ]; then echo "$name: SKIPPED (no time left)" | tee -a "$SUMMARY"; return; fi
  echo "=== $name (budget ${budget}s)" | tee -a "$log"
  local s; s=$(date +%s)
  timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1
  local rc=$?
  local status=ok; [ $rc -ne 0 ] && status="FAILED rc=$rc"; [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT"
  echo "$name: $status in $(( $(date +%s) - s ))s (budget ${budget}s)" | tee -a "$SUMMARY"
}

{
  echo "# zsgm device check $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
} >"$SUMMARY"

# ---- setup: wheels the image lacks, zsgm from this checkout (no install: kernels read from cuda/)
setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/zsgm_site \
      .whl/*.whl || return 1
  else
    echo "no .whl/ wheels: open_clip is missing, bench_nada_step will fail (run --fetch-wheels here first)"
  fi
  "$PY" - <<'EOF'
import torch, numpy, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
try:
    import cupy
    print("cupy", cupy.__version__, "nvrtc", cupy.cuda.nvrtc.getVersion(), "driver",
          cupy.cuda.runtime.driverGetVersion(), "from_external", hasattr(cupy.cuda.Stream, "from_external"))
except Exception as exc:
    print("cupy unavailable:", exc)
import zsgm.ops, open_clip
print("zsgm.ops and open_clip import")
EOF
}
export PYTHONPATH="/tmp/zsgm_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export -f setup
export PY
part setup 30 "$OUT/summary.txt" bash -c setup

# ---- the project's GPU tests (fail = a kernel disagrees with the reference somewhere)
part gpu-tests 110 "$OUT/pytest.log" "$PY" -m pytest -q -m gpu tests/test_ops_cuda_gpu.py -rfEs -p no:cacheprovider \
  --durations=10

# ---- per-op throughput and bandwidth, forward and backward, float32 and float16
part bench-ops 90 "$OUT/bench_ops.log" "$PY" benchmarks/bench_ops.py --sizes 64 256 1024 --batch 2 16 \
  --dtype float32 float16 --iters 20 --repeat 3 --json "$OUT/bench_ops.json"

# ---- the NADA step at 1024 px, batch 2, ViT-B/32 + ViT-B/16 (random weights); compile last (slowest)
part bench-nada 160 "$OUT/nada.log" "$PY" benchmarks/bench_nada_step.py --size 1024 --batch 2 --steps 10 --warmup 3 \
  --modes ref kernels kernels+tf32 kernels+tf32+bf16clip tf32+bf16 ref+freeze kernels+tf32+bf16clip+freeze \
  compile+tf32 --json "$OUT/nada.json"

# ---- the independent check (correctness sections only; its section A names the old kernel entry points)
if [ -f .whl/gpu_check/gpu_check.py ]; then
  part gpu-check 60 "$OUT/gpu_check.log" "$PY" .whl/gpu_check/gpu_check.py --quick --skip ADFG
else
  echo "gpu-check: SKIPPED (.whl/gpu_check not carried)" | tee -a "$SUMMARY"
fi

echo "total $(( $(date +%s) - T0 ))s" | tee -a "$SUMMARY"
grep -h -E "^(summary|FAILED|ERROR)|passed|failed" "$OUT/pytest.log" "$OUT/bench_ops.log" 2>/dev/null | tail -15 \
  | tee -a "$SUMMARY"
grep -E "FAILED|TIMEOUT" "$SUMMARY" >/dev/null && exit 1
exit 0
