#!/bin/bash
# One training on several GPUs with DDP: torchrun starts one process per GPU and Lightning reads
# torchrun's environment (rank, world size, master address); only rank 0 writes to MLflow.
#
#   bash docker/torchrun_train.sh 4 --config lucas2021_vgg19_4class --data.root /data/covid-4class
#   # two nodes, 4 GPUs each: run on both, NODE_RANK=0 on the one MASTER_ADDR names
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash docker/torchrun_train.sh 4 --config ... --data.root ...
#
# The first argument is the processes per node (GPUs); the rest go to `cxrlab train`. On a
# machine without GPUs the processes train on the CPU over gloo (how the test-suite runs it).
set -euo pipefail
NPROC=${1:?usage: torchrun_train.sh PROCESSES_PER_NODE [cxrlab train flags]}
shift
if [ -n "${CXRLAB_VENV:-}" ]; then source "$CXRLAB_VENV/bin/activate"; fi
exec torchrun --nnodes "${NNODES:-1}" --node-rank "${NODE_RANK:-0}" --nproc-per-node "$NPROC" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
  --no-python cxrlab train --trainer.devices "$NPROC" --trainer.num_nodes "${NNODES:-1}" \
  --trainer.strategy ddp "$@"
