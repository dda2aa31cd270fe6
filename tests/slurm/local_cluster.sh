#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, from Debian packages, for the SLURM test
# (tests/test_slurm.py). Needs root and apt; no systemd and no cgroups. Without an accounting
# database, so Snakemake must use `slurm-status-command: squeue` (as profiles/slurm does).
#
# Usage: local_cluster.sh install|start|stop
#   install  apt-get install munge, slurmctld, slurmd, slurm-client (skipped when present)
#   start    write /etc/slurm/slurm.conf from `slurmd -C`; start munged, slurmctld, slurmd;
#            wait (bounded) until the node is idle
#   stop     stop the daemons this script started, each by its own PID file
# Every wait is bounded; a daemon that does not come up fails the script with its log's tail.
set -euo pipefail

PARTITION="${PARTITION:-debug}"

wait_for() { # wait_for <seconds> <command...>
  local t=$1; shift
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out after ${t}s waiting for: $*" >&2
  tail -n 20 /var/log/slurm/*.log >&2 2>/dev/null || true
  return 1
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() { # stop_pidfile <pidfile> <name>
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    echo "stopped $2 (pid $pid)"
  fi
  rm -f "$f"
}

do_install() {
  local pkgs=(munge slurm-client slurmctld slurmd)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "slurm already installed"; return 0
  fi
  # No systemd: keep the packages' postinst scripts from trying to start the daemons.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  dpkg-query -W -f='${Package} ${Version}\n' "${pkgs[@]}"
}

write_slurm_conf() {
  local hw cpus sockets cores threads mem
  hw=$(slurmd -C | head -n1)
  cpus=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$hw")
  sockets=$(sed -E 's/.*SocketsPerBoard=([0-9]+).*/\1/' <<<"$hw")
  cores=$(sed -E 's/.*CoresPerSocket=([0-9]+).*/\1/' <<<"$hw")
  threads=$(sed -E 's/.*ThreadsPerCore=([0-9]+).*/\1/' <<<"$hw")
  mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
  mem=$(( mem * 95 / 100 ))   # configured above the real memory would drain the node

  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  cat > /etc/slurm/slurm.conf <<CONF
# single-node test cluster on localhost, written by tests/slurm/local_cluster.sh
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# finished jobs stay visible to squeue for 300 s: the executor's squeue status check needs that
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  echo "wrote /etc/slurm/slurm.conf (CPUs=$cpus RealMemory=$mem)"
}

do_start() {
  write_slurm_conf
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  if ! (munge -n | unmunge) >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; fi
  wait_for 20 sh -c 'munge -n | unmunge'
  running /run/slurmctld.pid || slurmctld
  wait_for 30 scontrol ping
  running /run/slurmd.pid || slurmd -N localhost
  wait_for 60 sh -c "sinfo -h -n localhost -o %T | grep -qx idle"
  sinfo
}

do_stop() {
  stop_pidfile /run/slurmd.pid slurmd
  stop_pidfile /run/slurmctld.pid slurmctld
  stop_pidfile /run/munge/munged.pid munged
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
