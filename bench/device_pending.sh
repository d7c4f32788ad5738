#!/usr/bin/env bash
# The device measurements still pending after 2026-12-06 (see bench/logs/device_2026-12-06_h100/README.md), as
# bench/device_run.sh calls under 600 s each:
#   bash bench/device_pending.sh encoders  # tests/gpu/test_encoders_gpu.py (needs the shared MiniLM models) and the
#                                          # XLM-R-large shape's bench with a kernel profile (issue 19)
#   bash bench/device_pending.sh h200      # on an H200 (the issues' targets are H200 figures), SciFact documents:
#                                          # long rows (issue 17), FP8 8B/4B (issue 18), R100 A/B (issue 15)
# Prepare here (git-ignored paths; name them in the device call's carry, 64 MiB in all):
#   .whl: pydantic, pydantic-core, pydantic-settings, annotated-types, typing-inspection, typing-extensions,
#     python-dotenv, tenacity as cp312 wheels (the device README's pip download line)
#   h200: mkdir -p .carry/shared/datasets && cp -r ../shared/tokenizers ../shared/configs .carry/shared/ \
#           && cp -r ../shared/datasets/scifact .carry/shared/datasets/   # without SciFact the workloads fall
#         back to synthetic documents (bench/gpu_systems.py), as on 2026-12-06
#         mkdir -p .carry/v_old/bench && git archive 59aea02 src | tar x -C .carry/v_old \
#           && cp bench/gpu_bench.py bench/gpu_systems.py bench/r100_timeline.py .carry/v_old/bench/
#         carry: .whl .carry/shared .carry/v_old
#   encoders: mkdir -p .carry/shared/models && cp -r ../shared/models/scifact-minilm-ce .carry/shared/models/ \
#           && mkdir -p .carry/shared/models/all-MiniLM-L6-v2 && (cd ../shared/models/all-MiniLM-L6-v2 \
#           && tar cf - --exclude model.safetensors .) | tar xf - -C .carry/shared/models/all-MiniLM-L6-v2
#         (the tests take only MiniLM's tokenizer; its weights would pass the carry limit); carry: .whl .carry/shared
cd "$(dirname "$0")/.." || exit 1
case ${1:-h200} in
  encoders) TESTS_K=encoders TEST_TIMEOUT=200 ENC_ONLY=bge-reranker-v2-m3-shape ENC_TIMEOUT=300 \
          exec bash bench/device_run.sh "tests encoders" ;;
  h200) LONGROW_VARIANTS=none LONGROW_TIMEOUT=200 FP8_SIZES=8b,4b FP8_EMBED= FP8_TIMEOUT=240 \
          exec bash bench/device_run.sh "longrow r100ab fp8" ;;
  *) echo "usage: $0 encoders|h200" >&2; exit 2 ;;
esac
