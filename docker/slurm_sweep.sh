#!/bin/bash
# One `cxrlab sweep` worker per GPU on a SLURM cluster: a job array whose every task is one GPU
# and one independent launch on the shared PostgreSQL study (trial numbers stay unique; a task
# that dies is re-queued by heartbeats after search.heartbeat.grace).
#
#   export CXRLAB_STORAGE=postgresql+psycopg2://cxrlab@db.internal:5432/optuna   # no password in it
#   export MLFLOW_TRACKING_URI=http://mlflow.internal:5000
#   export DATA=/shared/data/kth SWEEP_CONFIG=sweep_backbones TRIALS_PER_TASK=4
#   sbatch --array=0-7 docker/slurm_sweep.sh                                      # 8 GPUs
#
# Secrets come from the environment or a file, never argv: the PostgreSQL password from
# ~/.pgpass (chmod 600; a line db.internal:5432:optuna:cxrlab:PASSWORD) or $PGPASSWORD, which
# sbatch passes on; an MLflow server with basic auth from MLFLOW_TRACKING_USERNAME/_PASSWORD.
#SBATCH --job-name=cxrlab-sweep
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=cxrlab-sweep-%A_%a.out
# Pre-emption: SIGUSR1 90 s before the time limit; Lightning's SLURM support then saves an HPC
# checkpoint and requeues the task (scontrol requeue), which resumes from it. SIGTERM without it
# ends the training KILLED with exit 143 and a resumable last.ckpt.
#SBATCH --signal=USR1@90
#SBATCH --requeue
set -euo pipefail
: "${CXRLAB_STORAGE:?export CXRLAB_STORAGE=postgresql+psycopg2://USER@HOST:5432/DB (password: ~/.pgpass or PGPASSWORD)}"
: "${MLFLOW_TRACKING_URI:?export MLFLOW_TRACKING_URI=http://HOST:5000 (the MLflow server every task records into)}"
: "${DATA:?export DATA=/path/to/the/dataset (the same path on every node)}"
# A password in any form (user:PW@, :PW@ with no user, ?password=PW) is refused before it can
# reach a command line, where every user of the node sees it.
for url in "$CXRLAB_STORAGE" "$MLFLOW_TRACKING_URI"; do
  if [[ "$url" =~ ://[^/?#]*:[^/?#]*@ ]] || [[ "$url" =~ [?\&]([sS][sS][lL])?([pP][aA][sS][sS][wW][oO][rR][dD]|[pP][aA][sS][sS][wW][dD]|[pP][wW][dD])= ]]; then
    echo "slurm_sweep.sh: a URL holds a password; put it in ~/.pgpass or PGPASSWORD (an MLflow server login: MLFLOW_TRACKING_PASSWORD)" >&2
    exit 2
  fi
done
# The project's virtual environment, copied to (or shared with) every node.
if [ -n "${CXRLAB_VENV:-}" ]; then source "$CXRLAB_VENV/bin/activate"; fi

# SLURM sets CUDA_VISIBLE_DEVICES to this task's GPU; --gpus auto pins the one worker to it.
exec cxrlab sweep --config "${SWEEP_CONFIG:-sweep_backbones}" --data.root "$DATA" \
  --storage "$CXRLAB_STORAGE" --workers 1 --gpus auto --n_trials "${TRIALS_PER_TASK:-4}" \
  --tracking.checkpoint_dir "${CHECKPOINT_DIR:-$HOME/cxrlab-checkpoints}" "$@"
