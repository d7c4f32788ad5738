#!/usr/bin/env bash
# The device measurements still pending after sessions 12-14 (2026-12-06/07; logs device_2026-12-06{h_h200,i_h100};
# sessions 13 and 14 got no machine to run on: 14 and 15 calls, one machine taken back before the command
# ran), as bench/device_run.sh calls under 600 s each. Start with suite+graphs (it needs no H200), then encoders
# and fp8kernels on an H200 if one comes:
#   bash bench/device_pending.sh suite     # the whole GPU suite at HEAD (tests/gpu). The FP8 tests passed at c0ce2bb
#                                          # (i_h100) and the bf16 engine tests of TESTS_K "auto_engine or fp32 or
#                                          # real_0_6b or embedder_bf16" at 74fc0e3 (h_h200); the rest of the suite
#                                          # (every attention kind, long rows, deterministic bits, encoders) has not
#                                          # run since the layer halves began carrying the pending residual (74fc0e3)
#   bash bench/device_pending.sh unrun     # when little device time is left (< 500 s): only the GPU tests that
#                                          # have not run since 74fc0e3 (attention kinds, long rows, deterministic
#                                          # bits, packed encoders), under 300 s
#   bash bench/device_pending.sh suite+graphs  # the suite, then (same call, under 600 s) the FP8 8B with CUDA graphs
#                                          # on vs the default (graphs off for 4B/8B) and fast accumulation, no
#                                          # official recipe: whether the fused kernels left FP8 launch-bound
#   bash bench/device_pending.sh fp8kernels  # FP8 8B and 4B, fused kernels vs the reference ops and with fast
#                                          # accumulation, same process, interleaved, with the official recipe: the
#                                          # 4B, the x-official ratios and a second machine for the 1.47x / 1.60x of
#                                          # i_h100; then 0.6B and the 8B embedder (bash bench/device_run.sh fp8)
#   bash bench/device_pending.sh encoders  # the encoder bench at HEAD with its request cuts (--variants): re-time the
#                                          # cut the code takes (tokenize first < 256 inputs, else first chunk 2,048)
#   bash bench/device_pending.sh h200      # on an H200 (the issues' targets are H200 figures): long rows (issue 17),
#                                          # FP8 8B/4B (issue 18), R100 A/B (issue 15)
# Prepare here (git-ignored paths; name them in the device call's carry, 64 MiB in all with the tracked ~4.5 MiB):
#   .whl: pydantic 2.14.4, pydantic-core 2.50.5, pydantic-settings 2.16.3, annotated-types 0.8.0, typing-inspection
#     0.4.5, typing-extensions 4.16.0, python-dotenv 1.2.4, tenacity 9.1.4 as cp312 wheels (the device README's pip
#     download line; 2.9 MiB)
#   .carry/shared (53 MiB): configs; tokenizers/qwen3 without vocab.json and merges.txt (tokenizer.json alone gives
#     the same ids); datasets/scifact/{queries.jsonl, corpus.jsonl cut to its first 2,000 lines}; models/
#     scifact-minilm-ce (45 MiB); models/all-MiniLM-L6-v2 without model.safetensors and its onnx/openvino folders
#     (the tests take its tokenizer only)
#   .carry/shared_extra.tgz (1.9 MiB; device_run.sh unpacks it into .carry/shared): for the suite's FP8 embedder test
#     (cd ../shared && tar czf ../main/.carry/shared_extra.tgz --exclude vocab.json --exclude merges.txt \
#       tokenizers/qwen3-embedding)
#   h200 also: mkdir -p .carry/v_old/bench && git archive 59aea02 src | tar x -C .carry/v_old \
#           && cp bench/gpu_bench.py bench/gpu_systems.py bench/r100_timeline.py .carry/v_old/bench/
#     (drop models/scifact-minilm-ce from .carry/shared for that call); carry: .whl .carry/shared .carry/v_old
cd "$(dirname "$0")/.." || exit 1
case ${1:-h200} in
  suite) TEST_TIMEOUT=420 exec bash bench/device_run.sh "tests" ;;
  unrun) TEST_TIMEOUT=280 TESTS_K="deterministic or packed or every_attention or long_rows or triton_kernel \
      or default_mode" exec bash bench/device_run.sh "tests" ;;
  suite+graphs) TEST_TIMEOUT=390 FP8_SIZES=8b FP8_EMBED= FP8_TIMEOUT=160 FP8_EXTRA="--graphs --fast-accum \
      --no-official --repeats 4 --profile-sizes none" exec bash bench/device_run.sh "tests fp8" ;;
  fp8kernels) FP8_SIZES=${FP8_SIZES:-8b,4b} FP8_EMBED=${FP8_EMBED-8b} FP8_TIMEOUT=560 FP8_EXTRA="--kernels-ab \
      --fast-accum --graphs --repeats 4 --profile-sizes 8b" exec bash bench/device_run.sh "fp8" ;;
  encoders) ENC_ONLY=${ENC_ONLY-scifact-minilm-ce,bge-reranker-v2-m3-shape,modernbert-base-shape} \
      ENC_EXTRA=--variants ENC_TIMEOUT=300 exec bash bench/device_run.sh "encoders" ;;
  h200) LONGROW_VARIANTS=none LONGROW_TIMEOUT=200 FP8_SIZES=8b,4b FP8_EMBED= FP8_TIMEOUT=240 \
          exec bash bench/device_run.sh "longrow r100ab fp8" ;;
  *) echo "usage: $0 suite|unrun|suite+graphs|fp8kernels|encoders|h200" >&2; exit 2 ;;
esac
