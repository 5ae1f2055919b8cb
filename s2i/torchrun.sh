#!/usr/bin/env bash
# Shared launcher of run_audio_encoder.sh and run_generator.sh: torchrun_stage LOG_NAME SCRIPT NPROC [args...]
# NPROC processes per node (one per GPU on CUDA; CPU processes use gloo). Multi-node through NNODES,
# NODE_RANK, MASTER_ADDR, MASTER_PORT (the original's ARNOLD_*/METIS_* variables are honoured too).
# The console is also appended to $LOG_DIR/log.txt.
set -euo pipefail
torchrun_stage() {
    local log_dir=$1 script=$2
    shift 2
    if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
        echo "usage: $(basename "$0") NPROC [$(basename "$script") flags...]" >&2
        exit 2
    fi
    local nproc=$1
    shift
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
    fi
    local nnodes=${NNODES:-$(( ${ARNOLD_SERVER_NUM:-0} + ${ARNOLD_WORKER_NUM:-1} ))}
    local node_rank=${NODE_RANK:-${ARNOLD_ID:-0}}
    local addr=${MASTER_ADDR:-${METIS_SERVER_0_HOST:-${METIS_WORKER_0_HOST:-127.0.0.1}}}
    local port=${MASTER_PORT:-${METIS_SERVER_0_PORT:-${METIS_WORKER_0_PORT:-29500}}}
    log_dir=${LOG_DIR:-$log_dir}
    mkdir -p "$log_dir"
    echo "nproc_per_node=$nproc nnodes=$nnodes node_rank=$node_rank master=$addr:$port"
    "$PYTHON" -m torch.distributed.run --nproc_per_node="$nproc" --nnodes="$nnodes" --node_rank="$node_rank" \
        --master_addr="$addr" --master_port="$port" "$script" "$@" 2>&1 | tee -i -a "$log_dir/log.txt"
}
