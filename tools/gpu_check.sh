#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, runs every CUDA path segtrain has and writes one
# summary; without CUDA it says so in its last line and exits 0.
#
#   bash tools/gpu_check.sh [OUT_DIR]          # default output/gpu_check
#
# Parts (GPU_CHECK_PARTS, space-separated, default all of them, in this order):
#   env     torch / CUDA versions, the device, bf16 support, nvidia-smi
#   tests   the CUDA-marked tests (pytest -m cuda: AMP fp16 + GradScaler and bf16 through
#           DefaultTrainer, a one-GPU NCCL group through the launcher, tools/train_net.py
#           --num-gpus 1 on the GPU, the train benchmark's CUDA timing and peak memory)
#   bench   tools/benchmark.py criterion, train (projects/m2f/r50.yaml), sam2 and sam3 (official
#           sizes) with --device cuda: synchronised times and max_memory_allocated peaks, as JSON
#   sam2    each SAM 2.1 preset at official size (projects/sam2/sam2.1_hiera_*.yaml): a few
#           training iterations through tools/train_net.py on the GPU (time and max_mem)
#   sam3    the same for the SAM 3 presets at official size (projects/sam3/*.yaml other than
#           tiny*; the *_ft fine-tuning recipes on the shapes written as a Roboflow export)
# Every step runs under a time limit (GPU_CHECK_STEP_TIMEOUT seconds, default 420) with its
# output in OUT_DIR/<step>.log; OUT_DIR/summary.txt gets one line per step and the figures.
# Exit status: 0 when every step passed or there is no CUDA device, 1 otherwise.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${1:-output/gpu_check}
PY=${PYTHON:-python}
LIMIT=${GPU_CHECK_STEP_TIMEOUT:-420}
PARTS=${GPU_CHECK_PARTS:-env tests bench sam2 sam3}
ITERS=${GPU_CHECK_ITERS:-3}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "gpu_check: torch does not import with $PY; nothing was run" | tee "$SUMMARY"
    exit 1
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing was run" \
        | tee "$SUMMARY"
    exit 0
fi

passed=0
failed=0
: > "$SUMMARY"
echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    >> "$SUMMARY"

# step NAME COMMAND...: run COMMAND under the time limit, output in $OUT/NAME.log, one summary line
step() {
    local name=$1 t0=$SECONDS rc status
    shift
    echo "== $name: $*"
    timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        status=PASS
        passed=$((passed + 1))
    else
        status="FAIL (exit $rc)"
        [ "$rc" -eq 124 ] && status="FAIL (over ${LIMIT}s)"
        failed=$((failed + 1))
        tail -n 5 "$OUT/$name.log" | sed 's/^/    /'
    fi
    printf '%-26s %-18s %5ss  %s\n' "$name" "$status" $((SECONDS - t0)) "$OUT/$name.log" >> "$SUMMARY"
}

# train_preset NAME CONFIG [KEY VALUE ...]: a few training iterations of CONFIG on the GPU (no evaluation)
train_preset() {
    local name=$1 cfg=$2
    shift 2
    step "$name" "$PY" tools/train_net.py --config-file "$cfg" --num-gpus 1 MODEL.DEVICE cuda \
        SOLVER.MAX_ITER "$ITERS" SOLVER.MAX_EPOCHS 0 LOG_PERIOD 1 TEST.EVAL_PERIOD 0 \
        SOLVER.CHECKPOINT_PERIOD 100000 OUTPUT_DIR "$OUT/$name" "$@"
}

for part in $PARTS; do
    case $part in
    env)
        step env "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported(), \
'memory_GiB', round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))"
        command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/env.log" 2>&1
        ;;
    tests)
        step tests_cuda "$PY" -m pytest -q -rs -m cuda tests
        ;;
    bench)
        step bench_criterion "$PY" tools/benchmark.py criterion --device cuda --output "$OUT/bench_criterion.json"
        step bench_train_r50 "$PY" tools/benchmark.py train --device cuda --output "$OUT/bench_train_r50.json"
        step bench_sam2 "$PY" tools/benchmark.py sam2 --device cuda --output "$OUT/bench_sam2.json"
        step bench_sam3 "$PY" tools/benchmark.py sam3 --device cuda --output "$OUT/bench_sam3.json"
        ;;
    sam2 | sam3)
        found=0
        for cfg in projects/"$part"/*.yaml; do
            base=$(basename "$cfg" .yaml)
            case $base in Base-* | tiny* | simple_loss | sam2.1_tiny) continue ;; esac
            found=1
            case $base in
            *_ft)  # the fine-tuning recipes read a Roboflow export: the shapes written in that layout
                [ -d "$OUT/roboflow_shapes" ] || "$PY" tools/write_roboflow_shapes.py --output-dir "$OUT/roboflow_shapes" \
                    >> "$OUT/roboflow_shapes.log" 2>&1
                train_preset "${part}_${base}" "$cfg" DATASETS.ROBOFLOW.ROOT "$OUT/roboflow_shapes"
                ;;
            *) train_preset "${part}_${base}" "$cfg" ;;
            esac
        done
        [ "$found" -eq 0 ] && printf '%-26s %s\n' "$part" "no preset at official size in projects/$part: skipped" \
            >> "$SUMMARY"
        ;;
    *)
        echo "gpu_check: unknown part '$part' in GPU_CHECK_PARTS (valid: env tests bench sam2 sam3)" | tee -a "$SUMMARY"
        failed=$((failed + 1))
        ;;
    esac
done

# the figures: benchmark JSON summaries, the test tally, the presets' last console line
"$PY" - "$OUT" >> "$SUMMARY" 2>&1 <<'EOF'
import glob, json, os, re, sys

out = sys.argv[1]
print("figures:")
for path in sorted(glob.glob(os.path.join(out, "bench_*.json"))):
    with open(path) as f:
        report = json.load(f)
    keep = {k: v for k, v in report.get("summary", {}).items() if not isinstance(v, dict)}
    print(f"  {os.path.basename(path)}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in keep.items()))
    for r in report.get("results", []):
        name = r.get("variant") or r.get("case")
        figures = {k: r[k] for k in ("median_ms", "fwd_bwd_median_ms", "peak_mb") if isinstance(r.get(k), (int, float))}
        print(f"    {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()))
log = os.path.join(out, "tests_cuda.log")
if os.path.exists(log):
    lines = [l for l in open(log).read().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
    print("  tests_cuda: " + (lines[-1].strip() if lines else "no pytest tally"))
for path in sorted(glob.glob(os.path.join(out, "sam*.log"))):
    lines = [l for l in open(path).read().splitlines() if "max_mem" in l or "time:" in l]
    print(f"  {os.path.basename(path)[:-4]}: " + (lines[-1].split("]")[-1].strip() if lines else "no iteration line"))
EOF

verdict="gpu_check: $passed step(s) passed, $failed failed; summary in $SUMMARY"
echo "$verdict" >> "$SUMMARY"
cat "$SUMMARY"
[ "$failed" -eq 0 ]
