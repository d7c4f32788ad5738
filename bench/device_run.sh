#!/usr/bin/env bash
# One call on the GPU device (see bench/gpu_bench.py): environment check, GPU tests, benchmark.
#   bash bench/device_run.sh "attn tests bench" "0.6b,8b" "rerank,embed"
# attn: bench/attention_bench.py (one layer's attention kernels); attn8: its --fp8 table (ATTN8_TIMEOUT);
# longkern: the same on long rows, with FA2 varlen,
# bucketed cuDNN and both tile orders; r100ab: R100 timelines of HEAD and of the tree in .carry/v_old (59aea02),
# alternating processes twice (bench/device_pending.sh says how to build it); longrow: bench/longrow_bench.py
# (LONGROW_SIZES, LONGROW_VARIANTS, LONGROW_TIMEOUT); tests: tests/gpu; bench: bench/gpu_bench.py;
# encoders: bench/encoder_gpu_bench.py (ENC_ONLY, ENC_TIMEOUT; kernel profile of the XLM-R-large shape);
# fp8: bench/fp8_bench.py (FP8 vs bf16; FP8_SIZES, FP8_EMBED, FP8_TIMEOUT, FP8_EXTRA e.g. --fast-accum)
# gemm8: bench/fp8_gemm_bench.py (one product per 8B/0.6B projection shape: bf16 vs FP8 kernels, quantization cost;
#   GEMM8_EXTRA="--autotune --tokens 16384": CUTLASS row-wise vs inductor's max-autotune FP8 kernels)
# stability: bench/score_stability.py --gpu --deterministic (STAB_SIZES, STAB_CLAIMS, STAB_TIMEOUT)
# Needs .whl (pydantic & co, cp312) and .carry/shared (tokenizers, configs, SciFact) carried along.
set -o pipefail
STEPS=${1:-"tests bench"}; SIZES=${2:-0.6b,4b,8b}; PARTS=${3:-rerank,embed}; EXTRA=${4:-}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# tokenizers keep their default (parallel) threads in the benchmark; the tests' conftest turns them off
# one compile thread: inductor's pool of compile workers, started in the background when the cache is warm,
# slowed the first timed phase of a run 1.5x (seen 2026-11-29 on an H200; compile itself is cached)
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}
export PYTHONPATH=/tmp/site:src:bench QRANK_SHARED_DIR=.carry/shared PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
[ -f .carry/inductor.tgz ] && tar xzf .carry/inductor.tgz -C /tmp
# shared assets carried compressed (the carry limit is 64 MiB), unpacked into .carry/shared
[ -f .carry/shared_extra.tgz ] && tar xzf .carry/shared_extra.tgz -C .carry/shared
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/env.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/env.txt"
import torch, transformers, importlib.util as u
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "varlen module", u.find_spec("torch.nn.attention.varlen") is not None, torch.cuda.get_device_name())
PY
if [[ " $STEPS " == *" attn "* ]]; then
  timeout ${ATTN_TIMEOUT:-240} python3 bench/attention_bench.py --out "$OUT" 2>&1 | tail -n 80 | tee "$OUT/attention_bench.log"
fi
if [[ $STEPS == *longkern* ]]; then
  timeout ${ATTN_TIMEOUT:-110} python3 bench/attention_bench.py --long --out "$OUT" --block-m 64,128 --block-n 32,64 \
    --warps 4,8 --stages 2 2>&1 | tail -n 80 | tee "$OUT/attention_bench_long.log"
fi
if [[ $STEPS == *attn8* ]]; then  # the kernel's FP8 form vs bf16 (ATTN8_RUNS: long rows, the 100-document request)
  for run in ${ATTN8_RUNS:-long short}; do
    timeout ${ATTN8_TIMEOUT:-150} python3 bench/attention_bench.py --fp8 $([ "$run" = long ] && echo --long) \
      --out "$OUT" --block-m 64,128 --block-n ${ATTN8_BLOCK_N:-32,64,128} --warps 4,8 --stages ${ATTN8_STAGES:-2,3} 2>&1 \
      | tail -n 60 | tee -a "$OUT/attention_bench_fp8.log"
  done
fi
if [[ $STEPS == *longrow* ]]; then  # bench/longrow_bench.py: 1 x 20 documents of 2-4k tokens, end to end
  timeout ${LONGROW_TIMEOUT:-300} python3 bench/longrow_bench.py --sizes "${LONGROW_SIZES:-0.6b,8b}" --repeats 3 \
    --variants "${LONGROW_VARIANTS:-heavy,varlen,cudnn}" --out "$OUT/longrow" 2>&1 \
    | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/longrow_bench.log"
  grep -E "^Qwen3|^- " "$OUT/longrow_bench.log" || tail -n 30 "$OUT/longrow_bench.log"
fi
if [[ $STEPS == *r100ab* ]]; then
  for i in 1 2; do
    timeout 100 python3 bench/r100_timeline.py 0.6b HEAD > "$OUT/timeline_head_$i.log" 2>&1
    PYTHONPATH=/tmp/site:.carry/v_old/src:.carry/v_old/bench timeout 100 python3 .carry/v_old/bench/r100_timeline.py \
      0.6b OLD > "$OUT/timeline_old_$i.log" 2>&1
    grep -h -E "total median|GPU start" "$OUT"/timeline_*_$i.log
  done
fi
if [[ $STEPS == *tests* ]]; then
  # --timeout: one hung test fails alone and the rest still run (the call's own limit would lose them all)
  timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q tests/gpu -m gpu -s -p no:cacheprovider -o addopts="" \
    --timeout ${TEST_EACH_TIMEOUT:-200} ${TESTS_K:+-k "$TESTS_K"} 2>&1 | tee "$OUT/gpu_tests.log"
fi
if [[ $STEPS == *bench* ]]; then
  timeout ${BENCH_TIMEOUT:-420} python3 bench/gpu_bench.py run --sizes "$SIZES" --parts "$PARTS" --out "$OUT" $EXTRA 2>&1 \
    | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/gpu_bench.log"
  tail -n 60 "$OUT/gpu_bench.log"
fi
if [[ $STEPS == *encoders* ]]; then  # bench/encoder_gpu_bench.py: cross-encoders and an embedder vs ST (issue 19)
  timeout ${ENC_TIMEOUT:-300} python3 bench/encoder_gpu_bench.py --out "$OUT/enc" ${ENC_ONLY:+--only "$ENC_ONLY"} ${ENC_EXTRA:-} 2>&1 \
    | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/encoder_bench.log"
  tail -n 40 "$OUT/encoder_bench.log"
fi
if [[ $STEPS == *fp8* ]]; then  # bench/fp8_bench.py: fp8 vs bf16, 8B/4B/0.6B rerankers and the 8B embedder
  timeout ${FP8_TIMEOUT:-330} python3 bench/fp8_bench.py --sizes "${FP8_SIZES:-8b,4b,0.6b}" --embed-sizes "${FP8_EMBED-8b}" \
    --out "$OUT/fp8" ${FP8_EXTRA:-} 2>&1 | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/fp8_bench.log"
  grep -A12 "FP8 speed-ups" "$OUT/fp8_bench.log" || tail -n 40 "$OUT/fp8_bench.log"
fi
if [[ $STEPS == *gemm8* ]]; then
  timeout ${GEMM8_TIMEOUT:-120} python3 bench/fp8_gemm_bench.py --out "$OUT/fp8_gemm" ${GEMM8_EXTRA:-} 2>&1 | tee "$OUT/fp8_gemm.log" | tail -n 30
fi
if [[ $STEPS == *stability* ]]; then  # bench/score_stability.py --gpu: batch effects on scores, both modes (issue 20)
  timeout ${STAB_TIMEOUT:-540} python3 bench/score_stability.py --gpu --deterministic --sizes "${STAB_SIZES:-0.6b,8b}" \
    --claims "${STAB_CLAIMS:-10}" --dataset "$QRANK_SHARED_DIR/datasets/scifact" --out "$OUT/stability" 2>&1 \
    | grep -v -E "Loading weights|Writing model|Batches:" > "$OUT/stability.log"
  tail -n 30 "$OUT/stability.log"
fi
# at most 8 files come back from $OUT (the device README): the logs and reports travel as one archive
(cd "$OUT" && find . -type f | sort > /tmp/files.txt && tar czf /tmp/results.tgz -T /tmp/files.txt \
  && find . -mindepth 1 -delete && cp /tmp/results.tgz results.tgz; true)
tar czf /tmp/inductor.tgz -C /tmp inductor 2>/dev/null && [ "$(stat -c %s /tmp/inductor.tgz)" -lt 15000000 ] && cp /tmp/inductor.tgz "$OUT/"
ls -la "$OUT"; tar tzvf "$OUT/results.tgz"
