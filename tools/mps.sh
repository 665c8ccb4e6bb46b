#!/usr/bin/env bash
# CUDA MPS for packed cells: one control daemon lets the processes of several cells on one GPU run
# kernels concurrently instead of time-slicing (measured: 8 eager cells 45.8 -> 37.0 ms per
# cell-step on an H200). Optional everywhere: where the machine does not allow it (no
# nvidia-cuda-mps-control, a container without the rights, a GPU in a mode MPS refuses), `start`
# prints one line on stderr and the run goes on without it. Pipe and log folders live under /tmp.
#   eval "$(tools/mps.sh start)"   start the daemon; prints the exports its clients need (or nothing)
#   tools/mps.sh stop              stop it (nothing to do when it is not running)
#   tools/mps.sh status            "running" or "stopped"
set -uo pipefail
root=${ALIGN_MAMBA_MPS_DIR:-/tmp/align-mamba-mps}
pipe=$root/pipe
logs=$root/log
control() { CUDA_MPS_PIPE_DIRECTORY=$pipe CUDA_MPS_LOG_DIRECTORY=$logs nvidia-cuda-mps-control "$@"; }
case "${1:-}" in
  start)
    if ! command -v nvidia-cuda-mps-control > /dev/null; then
      echo "mps: nvidia-cuda-mps-control not found; running without MPS" >&2; exit 0
    fi
    if [ -e "$pipe/control" ]; then
      echo "export CUDA_MPS_PIPE_DIRECTORY=$pipe CUDA_MPS_LOG_DIRECTORY=$logs"; exit 0
    fi
    mkdir -p "$pipe" "$logs"
    if ! control -d 2> "$logs/start.err"; then
      echo "mps: the daemon did not start ($(head -c 200 "$logs/start.err" | tr '\n' ' ')); running without MPS" >&2
      exit 0
    fi
    # The daemon starts even where its server cannot (rights, compute mode): a client tells.
    if ! CUDA_MPS_PIPE_DIRECTORY=$pipe CUDA_MPS_LOG_DIRECTORY=$logs timeout 120 \
      python3 -c "import torch; torch.ones(1, device='cuda').add_(1); torch.cuda.synchronize()" 2> "$logs/client.err"; then
      echo "mps: a CUDA client could not use the daemon ($(tail -n 1 "$logs/client.err")); stopped it, running without MPS" >&2
      echo quit | control > /dev/null 2>&1
      exit 0
    fi
    echo "mps: daemon started (pipe $pipe, log $logs)" >&2
    echo "export CUDA_MPS_PIPE_DIRECTORY=$pipe CUDA_MPS_LOG_DIRECTORY=$logs"
    ;;
  stop)
    if [ -e "$pipe/control" ]; then
      echo quit | control > /dev/null 2>&1 && echo "mps: daemon stopped" >&2
    fi
    exit 0
    ;;
  status)
    [ -e "$pipe/control" ] && echo running || echo stopped
    ;;
  *) echo "usage: tools/mps.sh start|stop|status" >&2; exit 2 ;;
esac
