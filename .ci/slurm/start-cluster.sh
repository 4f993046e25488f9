#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for the tests marked `slurm`.
#
# Needs root and Debian's packages: apt-get install -y slurmctld slurmd munge
# (.ci/run installs them). Idempotent: if the cluster already answers with an
# idle node, it does nothing; otherwise it (re)writes the config and (re)starts
# munged, slurmctld and slurmd. Stop it with .ci/slurm/stop-cluster.sh.
#
# The choices that make it work without systemd, cgroups or a database:
#   proctrack/linuxproc, task/none  - no cgroup hierarchy needed (containers);
#   select/cons_tres, CR_Core       - jobs share the node by cores, as on a real cluster;
#   no accounting                   - so Snakemake needs --slurm-status-command squeue,
#   MinJobAge=300                   - and squeue must still show a finished job's state
#                                     when Snakemake asks (it polls every few seconds).
# The node claims at least 8 CPUs and 16 GB (SlurmdParameters=config_overrides, SLURM's
# switch for test setups): what the workflow's rules ask of a GPU node (tokenize 8
# threads, fine-tune 16 GB). On a smaller machine the jobs share its real cores and
# memory; the CPU-sized test study needs about 1.5 GB per job.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "start-cluster.sh: run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi
for tool in munged slurmctld slurmd sinfo; do
    if ! command -v "$tool" >/dev/null && [[ ! -x /usr/sbin/$tool ]]; then
        echo "start-cluster.sh: $tool not found; apt-get install -y slurmctld slurmd munge" >&2
        exit 1
    fi
done

node=$(hostname -s)
if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "SLURM already up: $(sinfo -h -N -o '%N %T %c CPUs')"
    exit 0
fi

cpus=$(nproc)
(( cpus < 8 )) && cpus=8
# What the kernel says the machine has, less 1 GB for the system.
memory_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
(( memory_mb < 16000 )) && memory_mb=16000

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge
cat >/etc/slurm/slurm.conf <<CONF
# Written by $(realpath "$0"): a single-node test cluster.
ClusterName=ftcompare-ci
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
# A job's steps get KillWait seconds between SIGTERM and SIGKILL.
KillWait=60
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

# munge: the key Debian's package generated; the daemon as its own user.
chown munge:munge /run/munge
chmod 0755 /run/munge
if ! pgrep -u munge -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# A stale daemon (an earlier config) is replaced; -c: no state from an earlier run.
for daemon in slurmctld slurmd; do
    if [[ -f /run/$daemon.pid ]] && kill -0 "$(cat /run/$daemon.pid)" 2>/dev/null; then
        kill "$(cat /run/$daemon.pid)"
        for _ in $(seq 50); do kill -0 "$(cat /run/$daemon.pid)" 2>/dev/null || break; sleep 0.1; done
    fi
done
/usr/sbin/slurmctld -c
/usr/sbin/slurmd

for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null || true)
    if [[ $state =~ ^(idle|mixed|allocated) ]]; then
        echo "SLURM up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
        exit 0
    fi
    sleep 1
done
echo "start-cluster.sh: the node did not become idle within 60 s (state: ${state:-no answer})" >&2
echo "--- slurmctld.log"; tail -20 /var/log/slurm/slurmctld.log >&2 || true
echo "--- slurmd.log"; tail -20 /var/log/slurm/slurmd.log >&2 || true
exit 1
