#!/usr/bin/env bash
# The GPU checks in one go: the CUDA tests, then the sampler, training-update and image-operator
# benchmarks on the GPU. Run from the repository root on a machine with a CUDA build of torch:
#     bash benchmarks/gpu.sh [OUT_DIR]
# Logs and JSON go to OUT_DIR (default benchmarks/results/gpu); each part has its own time limit, so one
# that hangs does not take the rest with it. About 3.5 minutes on an H200 (2026-11-26).
set -uo pipefail
out="${1:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$out/gpu.txt"
part() {  # part NAME SECONDS COMMAND...: run one part under a time limit, log it, report its exit status
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}
part test_cuda 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
part sampling 150 python3 benchmarks/sampling.py --device cuda --brian --seconds 0.5 --chains 1 256 4096
cp benchmarks/results/sampling_cuda.json "$out/" 2>/dev/null
part training 120 python3 benchmarks/training.py --device cuda --updates 60
cp benchmarks/results/training_cuda.json "$out/" 2>/dev/null
part images 150 python3 benchmarks/images.py --device cuda --processes 1 --batch 64 --steps 5
cp benchmarks/results/images_cuda.json "$out/images_cuda.json" 2>/dev/null
part images_bf16 120 python3 benchmarks/images.py --device cuda --processes 1 --batch 64 --steps 5 --autocast bf16
cp benchmarks/results/images_cuda.json "$out/images_cuda_bf16.json" 2>/dev/null
cat "$out/summary.txt"
