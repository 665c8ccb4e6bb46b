#!/usr/bin/env bash
# One time-limited GPU allocation of the study: run chosen cells of a preset with the gpu-node
# profile in the background, so a caller whose commands are capped (a lent GPU, an interactive
# session) can poll between calls; then pack what comes back (metrics, histories, logs, never
# checkpoints). Run from the project root on the GPU machine, with mamba-ssm and snakemake importable.
#   tools/gpu_allocation.sh start PRESET SLOTS CELL_ID...   start the cells (ids: pipeline check lists them);
#                                                           cells start in the order given, SLOTS at a time;
#                                                           ID.confirm: that cell's confirm job (below)
#   tools/gpu_allocation.sh wait SECONDS                    wait up to SECONDS for the run; print progress
#   tools/gpu_allocation.sh pack OUT_DIR                    OUT_DIR/allocation.tgz + allocation.log
#                                                           (merge it: python -m align_mamba.recall.merge)
#                                                           (+ kernel_cache.txz.NN: the kernel cache)
#   tools/gpu_allocation.sh kernels PREFIX                  unpack PREFIX.NN into the kernel cache
# The run happens in a scratch copy of the workflow (ALLOCATION_DIR, default /tmp/align-mamba-allocation:
# Snakefile, workflow/, src/, tools/ and the preset as params.yaml), never in the project itself: a
# caller that re-sends the project between its calls (a lent GPU syncs the working tree) would
# otherwise delete the data, cells and checkpoints the run writes, which git does not track.
# `wait` and `pack` read that copy; carry it off with `pack` before the machine goes.
# A confirm job decides from the training summaries of the cell's rate sweep, which an earlier
# allocation trained and whose checkpoints went with its machine. RESTORE="PACK.tgz ..." before
# `start` puts those packs' summaries (runs/*/train.json, history.csv) back into the scratch copy,
# and the confirm targets run in a second Snakemake that may not retrain them (--allowed-rules:
# validate, mqar_data, confirm), beside the first, on min(confirms, SLOTS/2) of the slots.
# STOP_STARTING_AFTER=SECONDS before `start`: no cell starts later than that after `start` (set it to
# the allocation's length less a cell's time); the cells it held back are listed in logs/not_started.txt.
# MPS=1 before `start`: the cells share the GPU through a CUDA MPS daemon (tools/mps.sh), started
# where the machine allows it (else one line, and the run goes on without it) and stopped when the
# run ends. Compiled and autotuned kernels are cached in ALIGN_MAMBA_CACHE_DIR (default
# .cache/kernels here); `pack` returns them as xz parts: carry those to the next machine and
# KERNELS=PREFIX before `start` (PREFIX: the parts' path less .NN) unpacks them, so it starts warm.
set -euo pipefail
command=${1:?usage: tools/gpu_allocation.sh start|wait|pack|kernels ...}
shift
work=${ALLOCATION_DIR:-/tmp/align-mamba-allocation}
case "$command" in
  start)
    preset=${1:?PRESET}; slots=${2:?SLOTS}; shift 2
    started=$(date +%s)
    [[ -z "${STOP_STARTING_AFTER:-}" || "$STOP_STARTING_AFTER" =~ ^[0-9]+$ ]] || {
      echo "STOP_STARTING_AFTER must be whole seconds, got '$STOP_STARTING_AFTER'" >&2; exit 2; }
    [ $# -gt 0 ] || { echo "start: no cell ids (python -m align_mamba.pipeline check lists them)" >&2; exit 2; }
    project=$PWD
    packs=()
    for pack in ${RESTORE:-}; do
      [ -f "$pack" ] || { echo "RESTORE: no pack $pack" >&2; exit 2; }
      packs+=("$(realpath "$pack")")
    done
    kernels=${KERNELS:+$(realpath -m "$KERNELS")}
    [ -e "$work" ] && { echo "$work exists (an earlier allocation): pack it, then remove it" >&2; exit 2; }
    mkdir -p "$work/logs"
    cp -r Snakefile workflow src tools "$work/"
    cp "$preset" "$work/params.yaml"
    cd "$work"
    # what ran where, for the study's allocation record (`pack` carries logs/)
    { date -u
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null || echo "no GPU (nvidia-smi absent)"
      for package in torch triton mamba_ssm; do
        printf '%s %s ' "$package" "$(python3 -c "import $package; print($package.__version__)" 2> /dev/null || echo absent)"
      done; echo
      echo "cells: $#, slots: $slots, preset: $preset"
    } > logs/setup.txt
    export PYTHONPATH=$work/src${PYTHONPATH:+:$PYTHONPATH}
    python3 -m align_mamba.pipeline dvc > /dev/null  # the validate rule checks dvc.yaml against params.yaml
    trains=() confirms=()
    for id in "$@"; do
      case "$id" in
        *.confirm) confirms+=("results/cells/$id.json") ;;
        *) trains+=("results/cells/$id.json") ;;
      esac
    done
    for pack in "${packs[@]}"; do tar xzf "$pack" --wildcards 'runs/*/train.json' 'runs/*/history.csv'; done
    export ALIGN_MAMBA_CACHE_DIR=${ALIGN_MAMBA_CACHE_DIR:-$project/.cache/kernels}
    [ -n "$kernels" ] && bash "$project/tools/gpu_allocation.sh" kernels "$kernels"
    stop_mps=true
    if [ "${MPS:-0}" = 1 ]; then
      eval "$(tools/mps.sh start)"
      stop_mps="tools/mps.sh stop"
    else
      export ALIGN_MAMBA_MPS=off  # the cells' Snakemakes would each start (and stop) their own daemon
    fi
    # --keep-going: one cell that fails (a diverged rate) must not stop the others in a paid
    # allocation. --nolock: several Snakemakes share the copy, on disjoint outputs.
    snakemake=(python3 -m snakemake --profile workflow/profiles/gpu-node --keep-going --nolock)
    confirm_slots=0
    if [ ${#confirms[@]} -gt 0 ] && [ ${#trains[@]} -gt 0 ] && [ "$slots" -lt 2 ]; then
      echo "cells and confirm jobs run side by side: SLOTS must be at least 2" >&2; exit 2
    fi
    if [ ${#confirms[@]} -gt 0 ]; then
      confirm_slots=$(( ${#confirms[@]} < slots / 2 ? ${#confirms[@]} : slots / 2 ))
      [ ${#trains[@]} -eq 0 ] && confirm_slots=$slots
      [ "$confirm_slots" -ge 1 ] || confirm_slots=1
    fi
    # the data first, once (and the params check): the runs below would otherwise make it side by side
    data=($(printf '%s\n' "${trains[@]}" "${confirms[@]}" | sed -E 's#.*/np([0-9]+)-.*#data/mqar/np\1#' | sort -u))
    "${snakemake[@]}" "${data[@]}" > logs/data.log 2>&1
    # One Snakemake per cell, started in the order of the ids as slots free up: one Snakemake over
    # all of them picks among ready jobs in an order of its own, and an allocation that runs out of
    # time would have spent itself on the cells asked for last.
    mkdir -p logs/cells
    : > logs/cells.txt
    [ ${#trains[@]} -gt 0 ] && printf '%s\n' "${trains[@]}" > logs/cells.txt
    { echo '#!/usr/bin/env bash'
      echo '# one cell (results/cells/ARCH/ID.json): its train and evaluate jobs, its own log'
      if [ -n "${STOP_STARTING_AFTER:-}" ]; then
        # a cell that cannot finish inside the allocation only slows those that can
        echo "[ \$(date +%s) -le $(( started + STOP_STARTING_AFTER )) ] || { echo \"\$1\" >> logs/not_started.txt; exit 0; }"
      fi
      echo "exec $(printf '%q ' "${snakemake[@]}") \"\$1\" --resources gpu_slots=1 \\"
      echo '  > "logs/cells/$(basename "$(dirname "$1")")_$(basename "$1" .json).log" 2>&1'
    } > logs/cell.sh
    {
      [ ${#trains[@]} -gt 0 ] && echo "xargs -a logs/cells.txt -P $(( slots - confirm_slots )) -n 1 bash logs/cell.sh &"
      [ ${#confirms[@]} -gt 0 ] && echo "$(printf '%q ' "${snakemake[@]}" "${confirms[@]}" --allowed-rules validate \
        mqar_data confirm --resources gpu_slots=$confirm_slots) > logs/confirm.log 2>&1 &"
      echo 'status=0; for pid in $(jobs -p); do wait "$pid" || status=1; done'
      echo "$stop_mps; exit \$status"
    } > logs/run.sh
    # setsid: the run outlives the command that started it (and stops MPS when it ends)
    setsid nohup bash logs/run.sh > /dev/null 2>&1 < /dev/null &
    echo $! > logs/allocation.pid
    echo "started ${#trains[@]} cells and ${#confirms[@]} confirm jobs, pid $(cat logs/allocation.pid)"
    ;;
  wait)
    cd "$work"
    limit=${1:?SECONDS}; deadline=$((SECONDS + limit))
    while kill -0 "$(cat logs/allocation.pid)" 2> /dev/null && [ $SECONDS -lt $deadline ]; do sleep 10; done
    kill -0 "$(cat logs/allocation.pid)" 2> /dev/null && echo "still running" || echo "finished"
    echo "cells finished: $(grep -l "steps (100%) done" logs/cells/*.log 2> /dev/null | wc -l) of $(wc -l < logs/cells.txt)"
    [ -f logs/not_started.txt ] && echo "cells not started (STOP_STARTING_AFTER): $(wc -l < logs/not_started.txt)"
    for log in logs/data.log logs/cells/*.log logs/confirm.log; do
      [ -f "$log" ] && { grep -E "Error|error:" "$log" | sed "s#^#$log: #" | tail -3 || true; }
    done
    [ -f logs/confirm.log ] && { grep -E "steps \(" logs/confirm.log | tail -1 || true; }
    echo "metrics files: $(find results/cells -name '*.json' ! -name '*.confirm.json' 2> /dev/null | wc -l)"
    echo "confirm files: $(find results/cells -name '*.confirm.json' 2> /dev/null | wc -l)"
    for log in logs/train/*/*.log logs/confirm/*/*.log; do [ -f "$log" ] && echo "$log: $(grep -o 'step [0-9]*/[0-9]* loss [0-9.]* validation accuracy [0-9.]*' "$log" | tail -1)"; done
    true
    ;;
  pack)
    out=$(realpath -m "${1:?OUT_DIR}"); mkdir -p "$out"
    cache=$(realpath -m "${ALIGN_MAMBA_CACHE_DIR:-.cache/kernels}")
    cd "$work"
    files=$(find results/cells runs -name '*.json' -o -name 'history.csv' 2> /dev/null | grep -v resume || true)
    tar czf "$out/allocation.tgz" params.yaml logs $files
    # one log: the data's, each cell's in the order asked for, the confirm jobs'
    cell_logs=$(sed -E 's#results/cells/([^/]+)/(.*)\.json#logs/cells/\1_\2.log#' logs/cells.txt 2> /dev/null || true)
    cat $(ls logs/data.log $cell_logs logs/confirm.log 2> /dev/null) > "$out/allocation.log"
    # the compiled and autotuned kernels (KERNELS=OUT_DIR/kernel_cache.txz at the next start),
    # in xz parts of 15 MiB: a lent machine returns files of at most 16 MiB, and Triton's IR is text
    if [ -n "$(ls -A "$cache" 2> /dev/null)" ]; then
      rm -f "$out"/kernel_cache.txz.*
      tar cf - -C "$cache" . | xz -T0 -6 | split -b 15M -d -a 2 - "$out/kernel_cache.txz."
      echo "kernel cache: $(ls "$out"/kernel_cache.txz.* | wc -l) part(s), $(du -sh "$cache" | cut -f1) unpacked"
    fi
    true
    ;;
  kernels)
    # Put a packed kernel cache (PREFIX.00, PREFIX.01, ...) into ALIGN_MAMBA_CACHE_DIR. A cache only
    # saves time, so a damaged or missing one leaves the folder empty and the run starts cold.
    prefix=${1:?PREFIX (the kernel_cache.txz of a pack)}
    cache=$(realpath -m "${ALIGN_MAMBA_CACHE_DIR:-.cache/kernels}")
    mkdir -p "$cache"
    if ls "$prefix".[0-9][0-9] > /dev/null 2>&1 && cat "$prefix".[0-9][0-9] | xz -dc | tar xf - -C "$cache" 2> /dev/null; then
      echo "kernel cache: restored from $prefix into $cache"
    else
      find "$cache" -mindepth 1 -delete
      echo "kernel cache: $prefix.NN missing or damaged; starting cold" >&2
    fi
    ;;
  *) echo "unknown command $command (start, wait, pack, kernels)" >&2; exit 2 ;;
esac
