#!/usr/bin/env bash
# The device measurements still pending for issues 15, 17 and 18 (written 2026-12-06; no device could be
# started that session), as one call of bench/device_run.sh under 600 s: long-row attention kernels for one
# layer (FA2 varlen, bucketed SDPA flash/cuDNN, the Triton kernel's tile shapes x tile order), the R100 A/B of
# HEAD against 59aea02 in alternating processes, and FP8 for the 4B/0.6B rerankers and the 8B embedder.
# Prepare here (git-ignored paths, then name them in the device call's carry: .whl .carry/shared .carry/v_old):
#   mkdir -p .carry/shared .whl && cp -r ../shared/tokenizers ../shared/configs .carry/shared/
#   mkdir -p .carry/v_old/bench && git archive 59aea02 src | tar x -C .carry/v_old \
#     && cp bench/gpu_bench.py bench/gpu_systems.py bench/r100_timeline.py .carry/v_old/bench/
#   .whl: pydantic, pydantic-core, pydantic-settings, annotated-types, typing-inspection, typing-extensions,
#     python-dotenv, tenacity as cp312 wheels (the device README's pip download line)
cd "$(dirname "$0")/.." || exit 1
FP8_SIZES=${FP8_SIZES:-4b,0.6b} FP8_EMBED=${FP8_EMBED:-8b} FP8_TIMEOUT=${FP8_TIMEOUT:-300} \
  exec bash bench/device_run.sh "longkern r100ab fp8"
