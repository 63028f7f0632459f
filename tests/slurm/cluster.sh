#!/usr/bin/env bash
# A single-node Slurm on 127.0.0.1 for the Slurm tests (tests/slurm.rs): munged, slurmctld and
# slurmd as root, with their configuration, state and logs under one directory.
#   tests/slurm/cluster.sh start [DIR]   start it (DIR defaults to /tmp/wgtrain-slurm); prints
#                                       the `export SLURM_CONF=…` that points sbatch at it
#   tests/slurm/cluster.sh stop [DIR]    stop it
# Needs Debian's slurm-wlm and munge (`apt-get install slurm-wlm munge`) and root.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop [DIR]}
dir=${2:-/tmp/wgtrain-slurm}
conf=$dir/slurm.conf

stop() {
    for daemon in slurmd slurmctld; do
        if [[ -f $dir/$daemon.pid ]]; then
            kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
        fi
    done
    # munged is stopped only if this script started it.
    if [[ -f $dir/munged.pid ]]; then
        kill "$(cat "$dir/munged.pid")" 2>/dev/null || true
    fi
    for pid in "$dir"/*.pid; do
        [[ -f $pid ]] || continue
        for _ in $(seq 50); do kill -0 "$(cat "$pid")" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pid"
    done
}

case $action in
stop)
    stop
    exit 0
    ;;
start) ;;
*)
    echo "usage: cluster.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac

stop
# Job ids start again from 1 with fresh state, so the old completion log goes too.
rm -rf "$dir/state" "$dir/spool" "$dir/jobcomp.log"
mkdir -p "$dir/state" "$dir/spool"
cpus=$(nproc)
cat >"$conf" <<CONF
ClusterName=wgtrain-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Each task's start and end, for the tests that check an array's concurrency limit.
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
MpiDefault=none
ReturnToService=2
# A requeued task is signalled, then killed after KillWait seconds.
KillWait=5
MinJobAge=600
NodeName=wgtrain NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=wgtrain Default=YES MaxTime=INFINITE State=UP
CONF

if ! munge -n </dev/null >/dev/null 2>&1; then
    if [[ ! -f /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge 2>/dev/null || true
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid 2>/dev/null || munged --force
    cp /run/munge/munged.pid "$dir/munged.pid" 2>/dev/null || true
fi
export SLURM_CONF=$conf
slurmctld -f "$conf"
slurmd -f "$conf" -N wgtrain
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        echo "export SLURM_CONF=$conf"
        exit 0
    fi
    sleep 0.2
done
echo "Slurm did not come up; its logs:" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
