#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests/test_slurm.py: the workflow through the real scheduler.
#   bash .ci/slurm/start.sh          # idempotent: installs what is missing, (re)starts what is not running
# The daemons stay up afterwards on purpose: once SLURM is installed, importing the executor plugin (which every
# snakemake call does) runs `scontrol show config`, which waits ~9 s for a slurmctld that is down.
# Needs root and apt access to Debian's repositories (CI: a fresh Debian container, no systemd, no cgroups).
#
# Accounting is off (accounting_storage/none; no slurmdbd, no database). snakemake-executor-plugin-slurm 2.8.0
# polls job states with `sacct` by default, which then only answers "accounting storage is disabled"; it also
# takes `--slurm-status-command squeue` and keeps squeue when MinJobAge >= 3 x its first poll interval. The test
# asks for squeue; MinJobAge=3600 keeps finished jobs visible to squeue (and to the test) for an hour. The job
# account (the test passes one) is checked with sacctmgr, then sshare: without accounting both answer nothing,
# so the plugin submits with the account unchecked, and slurmctld accepts any account.
# No cgroups here: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none.
set -euo pipefail
conf_dir=/etc/slurm
state=/var/lib/pixeldit-slurm        # spool, state and logs of this test cluster only
step() { echo "[slurm] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "[slurm] needs root (daemons, /etc/slurm, apt-get)" >&2; exit 1; }

missing=()
for command in slurmctld:slurmctld slurmd:slurmd munged:munge sbatch:slurm-client; do
    command -v "${command%%:*}" >/dev/null || missing+=("${command#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# munge: one key shared by the controller and the node (the same machine); the Debian package makes one too.
if [ ! -s /etc/munge/munge.key ]; then
    step "creating the munge key"
    mkdir -p /etc/munge
    mungekey --create --keyfile /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n >/dev/null 2>&1; then
    step "starting munged"
    runuser -u munge -- munged --force
fi

mkdir -p "$conf_dir" "$state/ctld" "$state/d" "$state/log"
cpus=$(nproc)
memory_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
cat > "$state/slurm.conf.new" <<EOF
# Written by .ci/slurm/start.sh: one node, this machine; accounting off (see the script).
ClusterName=pixeldit-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MinJobAge=3600
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
# A daemon killed without cleaning up leaves its pid file (the pid may be reused) or a zombie.
running() {
    local pid
    pid=$(cat "$state/$1.pid" 2>/dev/null) || return 1
    [ "$(ps -o comm= -p "$pid")" = "$1" ] && [[ "$(ps -o stat= -p "$pid")" != Z* ]]
}
if ! cmp -s "$state/slurm.conf.new" "$conf_dir/slurm.conf"; then
    step "writing $conf_dir/slurm.conf ($cpus CPUs, $memory_mb MB)"
    mv "$state/slurm.conf.new" "$conf_dir/slurm.conf"
    # daemons started with another configuration restart with this one
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            kill "$(cat "$state/$daemon.pid")"
            for _ in $(seq 30); do running "$daemon" || break; sleep 1; done
        fi
    done
else
    rm "$state/slurm.conf.new"
fi

if ! running slurmctld; then
    step "starting slurmctld (log: $state/log/slurmctld.log)"
    slurmctld
fi
if ! running slurmd; then
    step "starting slurmd (log: $state/log/slurmd.log)"
    slurmd -N localhost
fi

step "waiting for the node to be idle"
for _ in $(seq 60); do
    node_state=$(sinfo --noheader --nodes localhost --format %t 2>/dev/null || true)
    case "$node_state" in
        idle|mix|alloc) step "ready: $(sinfo --version), node localhost $node_state"; exit 0 ;;
        drain*|down*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "[slurm] node localhost not idle after 60 s (state: '${node_state:-no answer}'); sinfo -R and the logs:" >&2
sinfo -R >&2 || true
tail -n 20 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 || true
exit 1
