#!/usr/bin/env bash
# Launches speech-encoder training with torchrun: ./run_audio_encoder.sh NPROC [train_audio_encoder.py flags...]
# NPROC processes per node (one per GPU on CUDA; CPU processes use gloo). Multi-node through NNODES,
# NODE_RANK, MASTER_ADDR, MASTER_PORT (the original's ARNOLD_*/METIS_* variables are honoured too).
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 NPROC [train_audio_encoder.py flags...]" >&2
    exit 2
fi
NPROC=$1
shift
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
NNODES=${NNODES:-$(( ${ARNOLD_SERVER_NUM:-0} + ${ARNOLD_WORKER_NUM:-1} ))}
NODE_RANK=${NODE_RANK:-${ARNOLD_ID:-0}}
MASTER_ADDR=${MASTER_ADDR:-${METIS_SERVER_0_HOST:-${METIS_WORKER_0_HOST:-127.0.0.1}}}
MASTER_PORT=${MASTER_PORT:-${METIS_SERVER_0_PORT:-${METIS_WORKER_0_PORT:-29500}}}
LOG_DIR=${LOG_DIR:-./output/Audio_to_Image}
mkdir -p "$LOG_DIR"
echo "nproc_per_node=$NPROC nnodes=$NNODES node_rank=$NODE_RANK master=$MASTER_ADDR:$MASTER_PORT"
"$PYTHON" -m torch.distributed.run --nproc_per_node="$NPROC" --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    ./Audio_to_Image/train_audio_encoder.py "$@" 2>&1 | tee -a "$LOG_DIR/log.txt"
