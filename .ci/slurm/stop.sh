#!/usr/bin/env bash
# Stop the cluster of .ci/slurm/start.sh whatever state it is in: cancel jobs, then end slurmd,
# slurmctld and munged by their pid files (SIGTERM, SIGKILL after 10 s). Always exits 0.
set -euo pipefail

# cancel every job and give their steps a few seconds to end
if command -v scancel >/dev/null; then
  timeout 10 scancel --full --user=root >/dev/null 2>&1 || true
  for _ in $(seq 10); do
    [ -z "$(timeout 5 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
    sleep 1
  done
fi

stop() {  # stop <pid file>
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"  # a stale pid file breaks the Debian packages' removal scripts
}
stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/munge/munged.pid
exit 0
