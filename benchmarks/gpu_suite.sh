#!/usr/bin/env bash
# The GPU measurements of the README's "Speed" section, in one run: model forward+backward and the training
# loop (eager, then compiled) of PixelDiT-XL/16 at 256² in bf16, each against upstream NVlabs/PixelDiT.
#   bash benchmarks/gpu_suite.sh UPSTREAM_CHECKOUT OUT_DIR
# Each step has its own time limit, so a slow step (compilation) costs only its own result.
set -u
upstream=${1:?usage: gpu_suite.sh UPSTREAM_CHECKOUT OUT_DIR}
out=${2:?usage: gpu_suite.sh UPSTREAM_CHECKOUT OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$python -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$out/gpu.txt"
timeout 180 $python benchmarks/model_forward.py --res 256 --batch 32 --models PixelDiT-XL/16 --dtype bf16 --repeats 10 \
    --upstream "$upstream" --out "$out/model_forward_xl16_256_bf16.json"
train=(benchmarks/train_throughput.py --upstream "$upstream" --model PixelDiT-XL/16 --resolution 256 --batch 64
       --kimg 1 --align-layer 8 --precision bf16 --rounds 1 --data-root /tmp/pixeldit-benchmark-data)
timeout 240 $python "${train[@]}" --out "$out/train_throughput_xl16_256_bf16.json"
timeout "${COMPILE_LIMIT:-200}" $python "${train[@]}" --compile --out "$out/train_throughput_xl16_256_bf16_compile.json"
exit 0
