#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for CI: root, Debian 12, no systemd, no accounting,
# one fake GPU. The node has this machine's CPUs and a generous fake memory size, so jobs of any rule
# fit; nothing enforces either. Stop it with .ci/slurm/stop.sh.
set -euo pipefail
NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
MARK="# written by clueflow .ci/slurm/start.sh"

# 1. Packages (slurm-wlm = slurmctld + slurmd + slurm-client).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null ||
   ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
fi

# 2. Configuration; never overwrite a slurm.conf that this script did not write.
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  echo "start.sh: $CONF exists and was not written by this script; not touching it" >&2
  exit 1
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$CONF" <<CONF
$MARK
ClusterName=clueflowci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups (containers), no accounting (no slurmdbd): the profile must cope, see slurm/config.yaml
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# cons_tres: needed for sbatch --gpus
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue for 10 min (the profile polls with squeue)
MinJobAge=600
ReturnToService=2
SlurmdTimeout=300
# trust the node line below (fake memory) instead of what slurmd detects
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=256000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# a fake GPU: slurmd drops a GPU without File=, and /dev/null exists everywhere
echo "NodeName=$NODE Name=gpu File=/dev/null" > /etc/slurm/gres.conf

# 3. Daemons: munge (authentication), then the controller and the node daemon (fresh state, -c).
[ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
mkdir -p /run/munge && chown munge:munge /run/munge
[ -S /run/munge/munge.socket.2 ] && munge -n >/dev/null 2>&1 || su -s /bin/sh munge -c /usr/sbin/munged
slurmctld -c
slurmd

# 4. Wait (bounded) until the node is idle.
for _ in $(seq 60); do
  if [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = idle ]; then sinfo; exit 0; fi
  sleep 1
done
echo "start.sh: node $NODE not idle after 60 s" >&2
sinfo -R >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
