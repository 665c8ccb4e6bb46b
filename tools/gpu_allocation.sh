#!/usr/bin/env bash
# One time-limited GPU allocation of the study: run chosen cells of a preset with the gpu-node
# profile in the background, so a caller whose commands are capped (a lent GPU, an interactive
# session) can poll between calls; then pack what comes back (metrics, histories, logs, never
# checkpoints). Run from the project root on the GPU machine, with mamba-ssm and snakemake importable.
#   tools/gpu_allocation.sh start PRESET SLOTS CELL_ID...   start the cells (ids: pipeline check lists them);
#                                                           the first SLOTS ids take the first slots
#   tools/gpu_allocation.sh wait SECONDS                    wait up to SECONDS for the run; print progress
#   tools/gpu_allocation.sh pack OUT_DIR                    OUT_DIR/allocation.tgz + allocation.log
# The run happens in a scratch copy of the workflow (ALLOCATION_DIR, default /tmp/align-mamba-allocation:
# Snakefile, workflow/, src/, tools/ and the preset as params.yaml), never in the project itself: a
# caller that re-sends the project between its calls (a lent GPU syncs the working tree) would
# otherwise delete the data, cells and checkpoints the run writes, which git does not track.
# `wait` and `pack` read that copy; carry it off with `pack` before the machine goes.
# MPS=1 before `start`: the cells share the GPU through a CUDA MPS daemon (tools/mps.sh), started
# where the machine allows it (else one line, and the run goes on without it) and stopped when the
# run ends. Compiled and autotuned kernels are cached in ALIGN_MAMBA_CACHE_DIR (default
# .cache/kernels here): carry that folder to the next machine to start warm.
set -euo pipefail
command=${1:?usage: tools/gpu_allocation.sh start|wait|pack ...}
shift
work=${ALLOCATION_DIR:-/tmp/align-mamba-allocation}
case "$command" in
  start)
    preset=${1:?PRESET}; slots=${2:?SLOTS}; shift 2
    project=$PWD
    [ -e "$work" ] && { echo "$work exists (an earlier allocation): pack it, then remove it" >&2; exit 2; }
    mkdir -p "$work/logs"
    cp -r Snakefile workflow src tools "$work/"
    cp "$preset" "$work/params.yaml"
    cd "$work"
    export PYTHONPATH=$work/src${PYTHONPATH:+:$PYTHONPATH}
    python3 -m align_mamba.pipeline dvc > /dev/null  # the validate rule checks dvc.yaml against params.yaml
    targets=()
    for id in "$@"; do targets+=("results/cells/$id.json"); done
    export ALIGN_MAMBA_CACHE_DIR=${ALIGN_MAMBA_CACHE_DIR:-$project/.cache/kernels}
    stop_mps=true
    if [ "${MPS:-0}" = 1 ]; then
      eval "$(tools/mps.sh start)"
      stop_mps="tools/mps.sh stop"
    fi
    # setsid: the run outlives the command that started it (and stops MPS when it ends)
    # targets first, and a flag after each list: --prioritize and --resources take every word after them.
    # --keep-going: one cell that fails (a diverged rate) must not stop the others in a paid allocation
    setsid nohup bash -c '"$@"; status=$?; '"$stop_mps"'; exit $status' run \
      python3 -m snakemake "${targets[@]}" --prioritize "${targets[@]:0:$slots}" \
      --profile workflow/profiles/gpu-node --keep-going \
      --resources gpu_slots="$slots" > logs/allocation.log 2>&1 < /dev/null &
    echo $! > logs/allocation.pid
    echo "started $(( $# )) cells, snakemake pid $(cat logs/allocation.pid)"
    ;;
  wait)
    cd "$work"
    limit=${1:?SECONDS}; deadline=$((SECONDS + limit))
    while kill -0 "$(cat logs/allocation.pid)" 2> /dev/null && [ $SECONDS -lt $deadline ]; do sleep 10; done
    kill -0 "$(cat logs/allocation.pid)" 2> /dev/null && echo "still running" || echo "finished"
    grep -E "steps \(|Error|error:" logs/allocation.log | tail -5 || true
    echo "metrics files: $(find results/cells -name '*.json' 2> /dev/null | wc -l)"
    for log in logs/train/*/*.log; do [ -f "$log" ] && echo "$log: $(grep -o 'step [0-9]*/[0-9]* loss [0-9.]* validation accuracy [0-9.]*' "$log" | tail -1)"; done
    true
    ;;
  pack)
    out=$(realpath -m "${1:?OUT_DIR}"); mkdir -p "$out"
    cd "$work"
    files=$(find results/cells runs -name '*.json' -o -name 'history.csv' 2> /dev/null | grep -v resume || true)
    tar czf "$out/allocation.tgz" params.yaml logs $files
    cp logs/allocation.log "$out/allocation.log"
    ;;
  *) echo "unknown command $command (start, wait, pack)" >&2; exit 2 ;;
esac
