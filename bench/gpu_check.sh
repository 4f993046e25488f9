#!/usr/bin/env bash
# A GPU session's checks in one call, most important first, each under its own time
# limit so one slow step cannot eat the rest. Everything lands in $OUT, which the
# device tool brings back. Run from the repository root:
#
#   bash bench/gpu_check.sh    # device tool: carry [".whl", ".gpu"], timeout_s 600
#
# The steps' limits add up to 570 s; set-up time comes out of the last one, so the whole
# script ends within GPU_CHECK_SECONDS (585 s), inside one 600 s call.
#
# Carried, git-ignored: .whl/ holds the wheels the GPU image lacks (bitsandbytes,
# jsonschema, jsonschema-specifications, referencing, rpds-py, attrs: `pip download
# --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64
# --platform manylinux_2_17_x86_64`: rpds-py is only built for the older tag);
# .gpu/train-5k.parquet (IMDB reviews for the bench's lengths) and .gpu/bundle/ (from
# `python bench/stage_check.py prepare`). Env overrides for a CPU dry run of the script
# itself: BENCH_ARGS (extra bench arguments), STAGE_BUNDLE, STAGE_ARGS.
set -u
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
DEADLINE=$(($(date +%s) + ${GPU_CHECK_SECONDS:-585}))  # the call's 600 s, less a margin
for wheel in .whl/*.whl; do  # one at a time: a wheel for another Python must not block the rest
    [ -e "$wheel" ] || continue
    python -m pip install --quiet --no-deps --no-index --target .pydeps "$wheel" >> "$OUT/pip.log" 2>&1 \
        || echo "not installed: $wheel" >> "$OUT/pip.log"
done
export PYTHONPATH="$PWD/.pydeps:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
# Versions: every bench JSON and run record below carries them.

step() {  # name, time limit (s), command...; never past the call's deadline
    local name=$1 limit=$2 start left
    shift 2
    start=$(date +%s)
    left=$((DEADLINE - start))
    if [ "$left" -lt 30 ]; then echo "$name not run: ${left} s left" | tee -a "$OUT/steps.txt"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo "$name rc=$? $(($(date +%s) - start)) s" | tee -a "$OUT/steps.txt"
    tail -n 2 "$OUT/$name.out"
}

# 1. The defaults (token budget 8192, expandable segments, QLoRA recomputing
#    activations) against the reference recipe: the table and two lines.
step bench-defaults 240 python bench/throughput.py --imdb .gpu/train-5k.parquet \
    --json "$OUT/bench-defaults.json" ${BENCH_ARGS:-}
# 2. The stages themselves on CUDA: finetune + evaluate + report for every strategy.
step stage-check 180 python bench/stage_check.py run --bundle "${STAGE_BUNDLE:-.gpu/bundle}" \
    --out "$OUT/stage-check" ${STAGE_ARGS:-}
# 3. Where the budget's speed/memory trade-off lies: twice the tokens per batch.
step bench-16k 150 python bench/throughput.py --imdb .gpu/train-5k.parquet --strategies full lora ia3 \
    --max-tokens 16384 --json "$OUT/bench-16k.json" ${BENCH_ARGS:-}
