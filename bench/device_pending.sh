#!/usr/bin/env bash
# The device measurements still pending for issues 15, 17 and 18 (written 2026-12-06; no device could be
# started that session). One call, under 600 s: long-row attention kernels for one layer (FA2 varlen,
# bucketed SDPA flash/cuDNN, the Triton kernel's tile shapes x tile order), the R100 A/B of HEAD against
# 59aea02 in alternating processes, and FP8 for the 4B/0.6B rerankers and the 8B embedder.
# Prepare here (git-ignored paths, then name them in the device call's carry):
#   mkdir -p .carry/shared .whl && cp -r ../shared/tokenizers ../shared/configs .carry/shared/
#   mkdir -p .carry/v_old && git archive 59aea02 src | tar x -C .carry/v_old && mkdir -p .carry/v_old/bench \
#     && cp bench/gpu_bench.py bench/gpu_systems.py bench/r100_timeline.py .carry/v_old/bench/
#   .whl: pydantic, pydantic-core, pydantic-settings, annotated-types, typing-inspection, typing-extensions,
#     python-dotenv, tenacity as cp312 wheels (the device README's pip download line)
# Run: bash bench/device_pending.sh   (carry: .whl .carry/shared .carry/v_old)
set -o pipefail
T0=$(date +%s); left() { echo $(( ${1} - ($(date +%s) - T0) )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export TORCHINDUCTOR_COMPILE_THREADS=1 QRANK_SHARED_DIR=$PWD/.carry/shared PYTHONUNBUFFERED=1 \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/env.txt"
HEADP=/tmp/site:src:bench; OLDP=/tmp/site:.carry/v_old/src:.carry/v_old/bench
PYTHONPATH=$HEADP python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'transformers', transformers.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/env.txt"
PYTHONPATH=$HEADP timeout 110 python3 bench/attention_bench.py --long --out "$OUT" --block-m 64,128 --block-n 32,64 --warps 4,8 --stages 2 \
  > "$OUT/attn_long.log" 2>&1; echo "attn_long rc=$? at $(( $(date +%s) - T0 )) s"
grep -E "varlen|SDPA|Best" "$OUT/attn_long.log"; grep "triton" "$OUT/attn_long.log" | sort -t'|' -k8 -n | head -6
PYTHONPATH=$HEADP timeout 40 python3 bench/attention_bench.py --out "$OUT" --block-m 64 --block-n 32 --warps 4 --stages 2 \
  > "$OUT/attn_short.log" 2>&1; echo "attn_short rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "^\| [0-9]" "$OUT/attn_short.log"
for i in 1 2; do
  PYTHONPATH=$HEADP timeout 100 python3 bench/r100_timeline.py 0.6b HEAD > "$OUT/timeline_head_$i.log" 2>&1
  PYTHONPATH=$OLDP timeout 100 python3 .carry/v_old/bench/r100_timeline.py 0.6b OLD > "$OUT/timeline_old_$i.log" 2>&1
  echo "timelines $i at $(( $(date +%s) - T0 )) s"; grep -h -E "total median|GPU start" "$OUT"/timeline_*_$i.log
done
PYTHONPATH=$HEADP timeout $(left 585) python3 bench/fp8_bench.py --sizes 4b,0.6b --embed-sizes 8b --repeats 3 \
  --out "$OUT/fp8" 2>&1 | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/fp8_bench.log"
echo "fp8 rc=$? at $(( $(date +%s) - T0 )) s"; grep -A14 "FP8 speed-ups" "$OUT/fp8_bench.log" || grep -E "qrank|FAILED" "$OUT/fp8_bench.log" | tail -n 20
ls -la "$OUT" "$OUT/fp8"
