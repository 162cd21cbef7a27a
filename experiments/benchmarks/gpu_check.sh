#!/usr/bin/env bash
# The GPU check: one script, under 8 minutes, for any CUDA machine (issue 12). It runs
#   1. the sampler grid on CUDA up to 4096 x 64 (eager, torch.compile, CUDA graphs) and acting
#      env steps/s of SQL vs SAC for 1, 8 and 32 envs   -> experiments/results/sampler_throughput_cuda.*
#   2. a short SQL vs SAC run on HalfCheetah-v5 on the GPU -> experiments/results/mujoco_cuda.*
#   3. one RBM epoch on Fashion-MNIST with AIS            -> experiments/results/rbm_fashion.*
# and copies every figure to $OUT when that is set (the device tool brings back what is there).
#
# On a machine with PyTorch + CUDA but no package registry (the lent H200s), first run here
#     bash experiments/benchmarks/gpu_wheels.sh      # wheels + Fashion-MNIST into .gpu_wheels/
# then on the device:   command "bash experiments/benchmarks/gpu_check.sh", carry [".gpu_wheels"].
# Each part has its own time limit; a part that fails or runs out is reported and the rest go on.
set -uo pipefail
cd "$(dirname "$0")/../.."
wheels=${GPU_WHEELS:-.gpu_wheels}
python=${PYTHON:-python3}
results=experiments/results
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} MUJOCO_GL=egl WANDB_MODE=disabled PYTHONUNBUFFERED=1
start=$(date +%s)

if ! "$python" -c "import gymnasium, stable_baselines3, mujoco" 2>/dev/null; then
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "gymnasium/stable-baselines3/mujoco missing and no wheels in $wheels: run gpu_wheels.sh first" >&2
        exit 2
    fi
    "$python" -m venv --system-site-packages /tmp/ebrl-gpu
    python=/tmp/ebrl-gpu/bin/python
    # --no-deps: torch, numpy and the rest come from the machine's own Python.
    "$python" -m pip install --quiet --no-index --no-deps $(ls "$wheels"/*.whl | grep -v '/ebrl-')
fi
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))" || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

status=0
part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s, $(( $(date +%s) - start ))s elapsed)"
    if ! timeout "$limit" "$@"; then
        echo "=== $name FAILED or timed out" >&2
        status=1
    fi
}
part "sampler grid + acting on CUDA" 260 "$python" experiments/benchmarks/sampler_throughput.py \
    --device cuda --grid 1x16,256x16,4096x64 --repeats 5 --acting --n-envs 1,8,32 \
    --out "$results/sampler_throughput_cuda"
part "SQL vs SAC on HalfCheetah-v5, GPU" 150 "$python" experiments/benchmarks/mujoco_suite.py --no-ray \
    --device cuda --tasks halfcheetah --algos SQL SAC --seeds 0 --steps 6000 --eval-every 3000 \
    --eval-episodes 2 --learn-from 1000 --sac-learning-starts 1000 --out-prefix "$results/mujoco_cuda"
part "RBM epoch on Fashion-MNIST" 60 "$python" experiments/benchmarks/rbm.py --fashion-only \
    --fashion-dir "$wheels/fashion-mnist" --out-dir "$results"

echo "=== done in $(( $(date +%s) - start ))s"
if [ -n "${OUT:-}" ]; then
    cp -f "$results"/sampler_throughput_cuda.* "$results"/mujoco_cuda.* "$results"/mujoco_cuda_runs.jsonl \
        "$results"/rbm_fashion.* "$OUT"/ 2>/dev/null
    ls -la "$OUT"
fi
exit $status
