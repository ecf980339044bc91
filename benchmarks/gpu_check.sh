#!/usr/bin/env bash
# The GPU checks, for a session whose task is lent a CUDA machine (the device tool); never CI.
# About 6 minutes on one H200 (measured 2026-12-04: tests 35 s, presets 190 s, throughput 110 s), under 8:
#   1. the tests marked `cuda`: training (standard, FGSM, PGD), every attack against the CPU's
#      result, MC dropout with EOT, the generative model, PointRNG's draws on the device;
#   2. our autoattack and autoattack-fast presets on a PGD-trained CNN and the masked ratio
#      triplet (benchmarks/autoattack.py without the reference), timed on the GPU;
#   3. each autoattack attack's passes per point and per second in float32, bf16 and fp16, and
#      what the lower precisions change in robust accuracy (benchmarks/throughput.py).
# The sharded evaluation needs Ray, which the GPU image lacks (and its wheels exceed what a run
# carries): it is checked on the CPU cluster (tests/test_cluster_job.py).
#
# The GPU image has PyTorch but not pydantic or mlxtend. Before the first run, here (with the
# package registry): `make gpu-wheels` (fills .whl/, ignored by git). Then, with the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", "results/store"], timeout_s=480)
# (results/store: the models the CPU benchmarks attacked, so both machines attack the same
# weights; without it they are trained there first.)
# and record the figures from $OUT in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 ADVSWEEP_CACHE="${TMPDIR:-/tmp}/advsweep-cache"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
status=0
timeout 90 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_rng.py tests/test_latent.py 2>&1 | tee "$OUT/cuda-tests.log" || status=1
timeout 240 python3 benchmarks/autoattack.py --no-reference --device cuda --points 1000 2>&1 | tee "$OUT/autoattack-gpu.md" || status=1
timeout 140 python3 benchmarks/throughput.py --device cuda --points 1000 --precisions float32,bf16,fp16 2>&1 | tee "$OUT/throughput-gpu.md" || status=1
exit $status
