#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for deploy/check.sh: munged, slurmctld and slurmd
# with their configuration, state, logs and sockets under DIR. Needs Debian's slurm-wlm and
# munge packages and root (slurmd runs jobs as the submitting user).
#
#   local-cluster.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   local-cluster.sh stop DIR    # stops exactly the daemons that `start DIR` started
set -euo pipefail

die() {
    echo "local-cluster: $*" >&2
    exit 2
}

action=${1:-}
dir=${2:-}
[[ -n $action && -n $dir ]] || die "usage: local-cluster.sh start|stop DIR"

# Ports away from Slurm's defaults (6817, 6818), so a real installation is not disturbed.
ctld_port=${LOCAL_SLURM_CTLD_PORT:-16817}
slurmd_port=${LOCAL_SLURM_SLURMD_PORT:-16818}

stop() {
    # Each daemon by the pid file it wrote under DIR, newest first.
    local name pid
    for name in slurmd slurmctld munged; do
        [[ -s $dir/$name.pid ]] || continue
        pid=$(<"$dir/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
        fi
        rm -f "$dir/$name.pid"
    done
}

start() {
    for tool in munged slurmctld slurmd sbatch scontrol; do
        command -v "$tool" >/dev/null || die "no $tool: apt-get install -y slurm-wlm munge"
    done
    mkdir -p "$dir"/{state,spool/localhost,munge}
    dir=$(cd "$dir" && pwd)
    chown munge: "$dir/munge"
    chmod 0755 "$dir"

    # munged as its own user, with its socket, pid and log under DIR.
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    for _ in $(seq 50); do
        [[ -s $dir/munge/munged.pid ]] && break
        sleep 0.2
    done
    cp "$dir/munge/munged.pid" "$dir/munged.pid"

    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 - 512))
    cat >"$dir/slurm.conf" <<EOF
ClusterName=autodl-check
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MinJobAge=600
# Two pretend GPUs (no real devices), so the recipes' --gres=gpu:1 variant is accepted.
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmd drops a GPU without a device file, so each pretend one names a harmless file.
    printf 'NodeName=localhost Name=gpu File=%s\n' /dev/null /dev/zero >"$dir/gres.conf"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -i
    slurmd -N localhost
    for _ in $(seq 100); do
        if scontrol show node localhost 2>/dev/null | grep -qE 'State=(IDLE|MIXED|ALLOCATED)'; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.3
    done
    scontrol show node localhost >&2 || true
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    die "the node did not come up (logs above)"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) die "usage: local-cluster.sh start|stop DIR" ;;
esac
