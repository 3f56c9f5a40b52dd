#!/usr/bin/env bash
# Every speed ratio cxrlab promises, measured in one run on one GPU (under 8 minutes), offline.
#
#   bash benchmarks/gpu_suite.sh            # on a GPU machine, from the repository root or anywhere
#   bash benchmarks/gpu_suite.sh --smoke    # tiny sizes on the CPU: checks the suite runs end to end
#
# It runs from the project's virtual environment, also a copied one: PYTHON (default: .venv/bin/python
# beside this checkout) runs every benchmark as `python -m`, so no console-script shebang has to
# point at the original path. Nothing is downloaded (weights: none, generated data).
#
# Ratios and goals:
#   training throughput, cxrlab / a hand-written loop at the same precision, 224 px:
#     VGG19 frozen, DenseNet201 full fine-tuning, ResNet-101 from scratch     (goal >= 0.95)
#   VGG19 full fine-tuning, bf16 + channels_last / fp32                        (goal >= 2)
#   Grad-CAM, batched all-class maps / pytorch-grad-cam                        (goal >= 15)
#   AOPC, batched perturbation steps / a per-image, per-step loop              (goal >= 8)
#   loader with a warm decode cache / decoding every epoch                     (goal >= 5)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "usage: gpu_suite.sh [--smoke]" >&2; exit 2 ;;
esac

if [ "$smoke" = 1 ]; then
  # Seconds on a CPU: every benchmark and flag the GPU run uses, at toy sizes (the ratios mean nothing).
  export OMP_NUM_THREADS=1  # small CPU kernels slow down badly with spinning OpenMP threads
  device=cpu
  train=(--device cpu --size 32 --batch 2 --warmup 1 --steps 1 --repeats 1)
  explain=(--device cpu --size 32 --batch 2 --region 8 --steps 2 --repeats 1)
  loader=(--images 4 --size 32 --batch-size 2 --workers 0 --epochs 1)
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_suite.sh: no CUDA device visible to torch (python: $PY); run it on a GPU machine," \
         "or with --smoke to check the suite on the CPU" >&2
    exit 2
  fi
  device=cuda
  train=(--device cuda --size 224 --batch 32 --warmup 5 --steps 30 --repeats 3)
  explain=(--device cuda --size 224 --batch 32 --repeats 3)
  loader=(--images 200 --size 224)
  "$PY" -c "import torch; print('#', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
fi
"$PY" -c "import lightning, mlflow, optuna; print('# lightning', lightning.__version__, '| mlflow', mlflow.__version__, '| optuna', optuna.__version__)"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), device $device"

log="$(mktemp -d)/gpu_suite.log"
run() {  # run one benchmark, echo it, keep its output for the summary
  echo "\$ python -m $*"
  "$PY" -m "$@" 2>&1 | grep -v -i -E "warning|litlogger|available:|LOCAL_RANK" | tee -a "$log"
}

run benchmarks.train_throughput "${train[@]}" --backbone vgg19:frozen densenet201:full resnet101:scratch
run benchmarks.train_throughput "${train[@]}" --backbone vgg19:full --reference fp32
run benchmarks.explain_speed "${explain[@]}" --only grad_cam aopc
if [ -f benchmarks/loader_speed.py ]; then
  run benchmarks.loader_speed "${loader[@]}"
else
  echo "ratio loader: skipped, benchmarks/loader_speed.py is not in this checkout" | tee -a "$log"
fi

echo
echo "== every ratio (${device}) =="
grep -E "^ *ratio|^(grad_cam|aopc) " "$log"
