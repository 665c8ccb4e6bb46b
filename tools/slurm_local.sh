#!/usr/bin/env bash
# A single-node Slurm on this machine, to try `snakemake --profile slurm` without a cluster.
# Debian/Ubuntu, as root; no systemd needed (the daemons are started here and stopped by PID).
#
#   tools/slurm_local.sh install     apt-get install slurm-wlm munge, unless sbatch is already there
#   tools/slurm_local.sh start DIR   munged (unless one runs), slurmctld and slurmd; state, logs and
#                                    slurm.conf under DIR; waits until the node takes jobs
#   tools/slurm_local.sh stop DIR    stops, by PID, exactly the daemons `start DIR` started
#
# The cluster: one node `localhost` with this machine's cores, one partition `debug`, no accounting
# database (so `sacct` has nothing to tell; the slurm profile polls with squeue). Memory is not a
# consumable (CR_Core) and the node declares more than the rules request, so a job asking for
# 16 GB runs on a smaller machine. Finished jobs stay visible to squeue/scontrol for MinJobAge
# seconds, which must exceed the profile's wait between status checks.
set -euo pipefail

CONF_LINK=/etc/slurm/slurm.conf  # the plugin's job step drops SLURM_CONF, so the config must live here

die() { echo "slurm_local: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (it starts slurmd and writes $CONF_LINK)"; }

install_slurm() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    need_root
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge with the system's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s"
}

node_idle() { [ "$(sinfo -h -n localhost -o %T 2>/dev/null)" = "idle" ]; }

start_slurm() {
    local dir=$1
    need_root
    command -v slurmctld >/dev/null || die "Slurm is not installed: run '$0 install' first"
    if squeue -h >/dev/null 2>&1; then die "a Slurm controller already answers; not starting another"; fi
    if [ -e "$CONF_LINK" ] && [ ! -L "$CONF_LINK" ]; then
        die "$CONF_LINK exists and is not ours; not replacing it"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    : >"$dir/started"

    if ! munge_works; then
        install -d -o munge -g munge -m 0755 /run/munge
        runuser -u munge -- munged
        wait_for 10 munged munge_works
        echo "munged $(cat /run/munge/munged.pid)" >>"$dir/started"
    fi

    cat >"$dir/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
NodeName=localhost NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=65536
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p "$(dirname "$CONF_LINK")"
    ln -sfn "$dir/slurm.conf" "$CONF_LINK"
    echo "link $CONF_LINK" >>"$dir/started"

    slurmctld
    wait_for 10 slurmctld test -s "$dir/slurmctld.pid"
    echo "slurmctld $(cat "$dir/slurmctld.pid")" >>"$dir/started"
    slurmd -N localhost
    wait_for 10 slurmd test -s "$dir/slurmd.pid"
    echo "slurmd $(cat "$dir/slurmd.pid")" >>"$dir/started"
    wait_for 30 "the node (see $dir/log)" node_idle
}

stop_pid() {  # SIGTERM, then SIGKILL after 10 s
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop_slurm() {
    local dir=$1
    [ -f "$dir/started" ] || return 0
    # Last started, first stopped: slurmd, slurmctld, the config link, munged.
    tac "$dir/started" | while read -r what arg; do
        case $what in
            link) [ -L "$arg" ] && rm -f "$arg" ;;
            *) stop_pid "$arg" ;;
        esac
    done
    rm -f "$dir/started"
}

case ${1:-} in
    install) install_slurm ;;
    start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start_slurm "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop_slurm "$2" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
