#!/usr/bin/env bash
# A GPU session's checks in one call, most important first, each under its own time
# limit so one slow step cannot eat the rest. Everything lands in $OUT, which the
# device tool brings back; the last lines printed are each step's table. Run from the
# repository root, after `bash bench/gpu_prepare.sh` built the carried folders:
#
#   bash bench/gpu_check.sh    # device tool: carry [".whl", ".gpu"], timeout_s 600
#
# 1. stage-check: the workflow's own fine-tune, evaluate and report for all four
#    strategies on CUDA, as configured (random roberta-base: accuracy is chance).
# 2. graph-check: CUDA-graph steps against eager steps, numbers and time per step.
# 3. bench: the reference recipe against the configured recipe and its variants.
# 4. accuracy: real text (IMDB, all-MiniLM-L6-v2 in bf16) through the workflow's jobs,
#    eager against CUDA graphs with buckets, two seeds.
# The limits add up to 550 s; the whole script ends within GPU_CHECK_SECONDS (570 s).
# For a CPU dry run of the script itself: PYTHON=.venv/bin/python, and the *_ARGS
# variables to shrink each step (e.g. BENCH_ARGS="--quick").
set -u
OUT=${OUT:-gpu-check-out}      # what comes back: at most 8 files (the device tool's limit)
WORK=${WORK:-/tmp/gpu-check}   # everything else, models included
GPU=${GPU_DIR:-.gpu}           # the carried inputs
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
DEADLINE=$(($(date +%s) + ${GPU_CHECK_SECONDS:-570}))
for wheel in .whl/*.whl; do  # one at a time: a wheel for another Python must not block the rest
    [ -e "$wheel" ] || continue
    $PY -m pip install --quiet --no-deps --no-index --target .pydeps "$wheel" >> "$WORK/pip.log" 2>&1 \
        || echo "not installed: $wheel" >> "$WORK/pip.log"
done
export PYTHONPATH="$PWD/.pydeps:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
(nvidia-smi || true) > "$WORK/nvidia-smi.txt" 2>&1

run_step() {  # name, time limit (s), command...; never past the call's deadline
    local name=$1 limit=$2 start left
    shift 2
    start=$(date +%s)
    left=$((DEADLINE - start))
    if [ "$left" -lt 20 ]; then echo "$name not run: ${left} s left" | tee -a "$WORK/steps.txt"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout "$limit" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    echo "$name rc=$? $(($(date +%s) - start)) s" | tee -a "$WORK/steps.txt"
}

STEPS=" ${GPU_CHECK_STEPS:-stage-check graph-check bench accuracy} "
step() {  # as below, for the steps named in GPU_CHECK_STEPS only
    case "$STEPS" in *" $1 "*) run_step "$@" ;; *) echo "$1 not asked for" >> "$WORK/steps.txt" ;; esac
}

step stage-check 100 $PY bench/stage_check.py run --bundle "$GPU/bundle" --out "$WORK/stage-check" ${STAGE_ARGS:-}
step graph-check 70 $PY bench/graph_check.py --profile ${GRAPH_ARGS:-}
# The first variant is the config as it is; "eager" is the same without buckets or graphs.
step bench 230 $PY bench/throughput.py --imdb "$GPU/train-5k-lengths.npy" --json "$WORK/bench.json" \
    --variant configured --variant eager:bucket_width=none,cuda_graphs=false \
    ${BENCH_VARIANTS:---variant graphs16:bucket_width=16 --variant graphs32-16k:max_tokens_per_batch=16384} ${BENCH_ARGS:-}
step accuracy 150 $PY bench/stage_check.py run --bundle "$GPU/minilm" --model "$GPU/minilm/model" --out "$WORK/accuracy" \
    --epochs 2 --seeds 0 1 --set training.max_length=256 --set training.checkpoint_every_minutes=null \
    --set strategies.full.learning_rate=1.0e-4 --set strategies.lora.learning_rate=2.0e-3 \
    --set strategies.qlora.learning_rate=2.0e-3 --set strategies.ia3.learning_rate=1.0e-2 \
    --variant configured --variant eager:training.bucket_width=null,training.cuda_graphs=false ${ACCURACY_ARGS:-}

# Back to this machine: the four tables, the bench's JSON, and every small record in one archive.
cp "$WORK"/{stage-check,graph-check,bench,accuracy}.out "$WORK/bench.json" "$OUT/" 2>/dev/null
(cd "$WORK" && find . -type f \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.log' -o -name '*.err' \
    -o -name '*.out' -o -name '*.txt' \) -not -path '*/model/*' -not -path '*/roberta-base-random/*' -size -2M \
    | tar czf "$OUT/records.tar.gz" -T -)
for name in stage-check graph-check bench accuracy; do
    echo "=== $name"
    if [ -s "$WORK/$name.out" ]; then tail -n 25 "$WORK/$name.out"; else tail -n 8 "$WORK/$name.err" 2>/dev/null; fi
done
cat "$WORK/steps.txt"
