#!/usr/bin/env bash
# A private one-node SLURM (Debian's 22.05) on localhost for the test suite: slurmctld, slurmd,
# munge and, for `sacct`, MariaDB + slurmdbd (or an scontrol-based sacct stand-in when those
# fail). Everything it writes lives under $PROTOSEG_SLURM_ROOT (default /tmp/protoseg-slurm):
# config, state, logs, pid files, the database; /etc/slurm is left alone and the daemons use
# their own ports, so a system SLURM is never touched. Clients find it through SLURM_CONF.
#
#   slurm.sh start [--owner PID]   install missing packages (root, apt-get), start the daemons
#                                  (or join the instance already running), wait for the node
#                                  to be idle; prints SLURM_CONF=, ACCOUNTING=, PATH_PREFIX=
#   slurm.sh stop  [--owner PID]   leave; the last owner cancels the jobs and stops every
#                                  daemon this script started, by the PID in its pid file
#
# The daemons are started with fd 9 (the lock) closed, so they never hold it.
# PROTOSEG_SLURM_ACCOUNTING=shim skips MariaDB + slurmdbd and uses the sacct stand-in.
# A failing step prints "slurm.sh: step '<name>' failed" and the tail of its output, exit 1.
# Adapted from the recipe tested on the project's 2-core Debian 12 machine (root, no systemd).
set -uo pipefail

ROOT=${PROTOSEG_SLURM_ROOT:-/tmp/protoseg-slurm}
PORT=${PROTOSEG_SLURM_PORT:-16817}  # slurmctld; slurmd +1, slurmdbd +2, MariaDB +3
CONF=$ROOT/etc/slurm.conf
RUN=$ROOT/run
LOG=$ROOT/log
CLUSTER=protoseg
export SLURM_CONF=$CONF

ACTION=${1:-start}
OWNER=$$
[ "${2:-}" = "--owner" ] && OWNER=${3:?--owner needs a PID}

STARTING=0
fail() {  # fail STEP LOGFILE|MESSAGE: name the step, show what it printed, stop what started
  echo "slurm.sh: step '$1' failed" >&2
  if [ -f "${2:-}" ]; then tail -n 25 "$2" >&2; else echo "${2:-}" >&2; fi
  [ "$STARTING" = 1 ] && stop_all
  exit 1
}

wait_for() {  # wait_for SECONDS COMMAND...: poll every 0.5 s until COMMAND succeeds
  local n=$(($1 * 2)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

wait_daemon() {  # wait_daemon SECONDS LOG PROBE...: poll PROBE; give up early on a fatal in LOG
  local n=$(($1 * 2)) log=$2; shift 2
  for _ in $(seq "$n"); do
    "$@" >/dev/null 2>&1 && return 0
    grep -q "fatal:" "$log" 2>/dev/null && return 1
    sleep 0.5
  done
  return 1
}

ctld_up() { timeout 5 scontrol ping 2>/dev/null | grep -q UP; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {  # alive NAME: the daemon NAME we started is running
  local p
  p=$(cat "$RUN/$1.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

stop_pids() {  # stop_pids NAME...: TERM, then KILL after 10 s, the daemons in $RUN/NAME.pid
  local name p pids=()
  for name in "$@"; do
    p=$(cat "$RUN/$name.pid" 2>/dev/null) && [ -n "$p" ] && kill "$p" 2>/dev/null && pids+=("$p")
    rm -f "$RUN/$name.pid"
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && { echo "slurm.sh: PID $p ignored TERM, killing" >&2; kill -9 "$p"; }
  done
  return 0
}

live_owners() {  # owners (PIDs) still alive; drops the files of dead ones
  local f
  for f in "$ROOT"/owners/*; do
    [ -e "$f" ] || continue
    if kill -0 "${f##*/}" 2>/dev/null; then echo "${f##*/}"; else rm -f "$f"; fi
  done
}

node_idle() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -qx 'idle'; }

print_env() {
  echo "SLURM_CONF=$CONF"
  echo "ACCOUNTING=$(cat "$ROOT/accounting" 2>/dev/null)"
  echo "PATH_PREFIX=$(cat "$ROOT/path_prefix" 2>/dev/null)"
}

stop_all() {
  if alive slurmctld && ctld_up; then  # jobs' processes outlive slurmd: end them first
    timeout 10 squeue -h -o %A | sort -u | xargs -r timeout 10 scancel >/dev/null 2>&1 || true
    wait_for 15 bash -c '[ -z "$(timeout 5 squeue -h 2>/dev/null)" ]' || true
  fi
  stop_pids slurmd slurmctld slurmdbd mysqld munged
}

# ------------------------------------------------------------------------------ steps of start

install_packages() {
  local pkgs="" p
  for p in slurmctld:/usr/sbin/slurmctld slurmd:/usr/sbin/slurmd slurm-client:/usr/bin/sbatch \
           munge:/usr/sbin/munged slurmdbd:/usr/sbin/slurmdbd mariadb-server:/usr/sbin/mariadbd; do
    [ -x "${p#*:}" ] || pkgs="$pkgs ${p%%:*}"
  done
  [ -z "$pkgs" ] && return 0
  [ "$(id -u)" = 0 ] || { echo "not root: cannot apt-get install$pkgs" >"$LOG/install.out"; return 1; }
  command -v apt-get >/dev/null || { echo "no apt-get: install$pkgs yourself" >"$LOG/install.out"; return 1; }
  # keep the packages' own init scripts from starting system daemons on the default ports
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >$policy; chmod 755 $policy
  fi
  local rc=0
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
    >"$LOG/install.out" 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG/install.out" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
      >>"$LOG/install.out" 2>&1 || rc=$?
  }
  [ -n "$policy" ] && rm -f "$policy"
  for p in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
    [ -x "$p" ] || { echo "missing $p after apt-get install (rc $rc)" >>"$LOG/install.out"; return 1; }
  done
}

start_munge() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0  # a munged already answers
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --force && chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid 9>&- || return 1
  cp /run/munge/munged.pid "$RUN/munged.pid"
  wait_for 10 bash -c 'munge -n | unmunge'
}

start_accounting() {  # MariaDB in a private data dir + slurmdbd; 1 when either fails
  [ "${PROTOSEG_SLURM_ACCOUNTING:-}" = shim ] && { echo "PROTOSEG_SLURM_ACCOUNTING=shim"; return 1; }
  [ -x /usr/sbin/slurmdbd ] && [ -x /usr/sbin/mariadbd ] || { echo "slurmdbd/mariadbd not installed"; return 1; }
  local db=$ROOT/mysql sock=$RUN/mysqld.sock
  mkdir -p "$db" && chown mysql:mysql "$db" "$RUN" || return 1
  mariadb-install-db --user=mysql --datadir="$db" --auth-root-authentication-method=socket \
    --skip-test-db || return 1
  /usr/sbin/mariadbd --user=mysql --datadir="$db" --socket="$sock" --pid-file="$RUN/mysqld.pid" \
    --port=$((PORT + 3)) --bind-address=127.0.0.1 >"$LOG/mariadb.log" 2>&1 9>&- </dev/null &
  wait_for 60 test -S "$sock" || { echo "MariaDB did not open $sock"; tail "$LOG/mariadb.log"; return 1; }
  mariadb --socket="$sock" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" || return 1
  cat >"$ROOT/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
EOF
  chmod 600 "$ROOT/etc/slurmdbd.conf"
  /usr/sbin/slurmdbd 9>&- </dev/null || return 1  # reads slurmdbd.conf beside $SLURM_CONF
  wait_daemon 60 "$LOG/slurmdbd.log" port_open $((PORT + 2)) || { echo "slurmdbd did not open port $((PORT + 2))"; tail "$LOG/slurmdbd.log"; return 1; }
}

write_slurm_conf() {  # write_slurm_conf slurmdbd|shim
  local acct cpus mem
  if [ "$1" = slurmdbd ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
JobAcctGatherType=jobacct_gather/linux"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cpus=$(nproc)
  mem=$(($(free -m | awk '/^Mem:/{print $2}') * 85 / 100))
  cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire+1 s before they may start again (default 120)
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
MaxArraySize=1001
StateSaveLocation=$ROOT/spool/ctld
SlurmdSpoolDir=$ROOT/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

install_sacct_shim() {  # submitit polls sacct; without slurmdbd answer from scontrol
  mkdir -p "$ROOT/bin"
  cat >"$ROOT/bin/sacct" <<'EOF'
#!/bin/bash
# sacct stand-in for submitit ("-o JobID,State,NodeList --parsable2 -j ID[,ID]") built on
# scontrol; it knows jobs for MinJobAge (600 s) after they end.
ids=""
while [ $# -gt 0 ]; do case "$1" in -j) ids="$2"; shift 2;; *) shift;; esac; done
echo "JobID|State|NodeList"
IFS=',' read -ra arr <<< "$ids"
for id in "${arr[@]}"; do
  scontrol -o show job "$id" 2>/dev/null | while read -r line; do
    jid=$(grep -oP '(?<=JobId=)\S+' <<<"$line")
    aj=$(grep -oP '(?<=ArrayJobId=)\S+' <<<"$line"); at=$(grep -oP '(?<=ArrayTaskId=)\S+' <<<"$line")
    st=$(grep -oP '(?<=JobState=)\S+' <<<"$line"); nl=$(grep -oP '(?<= NodeList=)\S+' <<<"$line")
    [[ -z "$at" || "$at" =~ ^[0-9]+$ ]] || at="[$at]"  # pending tasks: 5_[0-3%2], as sacct
    [ -n "$aj" ] && [ -n "$at" ] && jid="${aj}_${at}"
    echo "${jid}|${st}|${nl}"
  done
done
EOF
  chmod 755 "$ROOT/bin/sacct"
  echo "$ROOT/bin" >"$ROOT/path_prefix"
}

start_all() {
  [ "$(id -u)" = 0 ] || fail root "starting SLURM daemons needs root (uid $(id -u))"
  rm -rf "$ROOT/etc" "$ROOT/spool" "$ROOT/run" "$ROOT/log" "$ROOT/mysql" "$ROOT/bin" \
    "$ROOT/accounting" "$ROOT/path_prefix"
  mkdir -p "$ROOT/etc" "$ROOT/spool/ctld" "$ROOT/spool/d" "$RUN" "$LOG"
  chmod 755 "$ROOT" "$ROOT/etc" "$RUN"
  local p
  for p in $PORT $((PORT + 1)) $((PORT + 2)) $((PORT + 3)); do
    port_open "$p" && fail ports "127.0.0.1:$p is in use; set PROTOSEG_SLURM_PORT (base of 4 free ports)"
  done
  install_packages || fail install "$LOG/install.out"
  start_munge >"$LOG/munge.out" 2>&1 || fail munge "$LOG/munge.out"
  if start_accounting >"$LOG/accounting.out" 2>&1; then
    echo slurmdbd >"$ROOT/accounting"
    : >"$ROOT/path_prefix"
    write_slurm_conf slurmdbd
    # the cluster must exist in slurmdbd before slurmctld registers
    sacctmgr -i add cluster "$CLUSTER" >>"$LOG/accounting.out" 2>&1 || true
  else
    echo "slurm.sh: accounting (MariaDB + slurmdbd) failed, using the scontrol sacct shim:" >&2
    tail -n 5 "$LOG/accounting.out" >&2
    stop_pids slurmdbd mysqld
    echo shim >"$ROOT/accounting"
    write_slurm_conf shim
    install_sacct_shim
  fi
  /usr/sbin/slurmctld -f "$CONF" >"$LOG/slurmctld.out" 2>&1 9>&- </dev/null || fail slurmctld "$LOG/slurmctld.out"
  wait_daemon 30 "$LOG/slurmctld.log" ctld_up || fail slurmctld "$LOG/slurmctld.log"
  /usr/sbin/slurmd -f "$CONF" -N localhost >"$LOG/slurmd.out" 2>&1 9>&- </dev/null || fail slurmd "$LOG/slurmd.out"
  wait_daemon 60 "$LOG/slurmd.log" node_idle || {
    { sinfo -N -l; scontrol show node localhost; tail -n 15 "$LOG/slurmd.log"; } >>"$LOG/slurmd.out" 2>&1
    fail "node idle" "$LOG/slurmd.out"
  }
  if [ "$(cat "$ROOT/accounting")" = slurmdbd ] && ! wait_for 20 timeout 5 sacct -n -X -j 1; then
    echo "slurm.sh: sacct does not answer, using the scontrol sacct shim" >&2
    install_sacct_shim
  fi
}

# ------------------------------------------------------------------------------ main

mkdir -p "$ROOT/owners" 2>/dev/null || fail setup "cannot create $ROOT/owners (set PROTOSEG_SLURM_ROOT)"
exec 9>"$ROOT/lock"
flock -w 600 9 || fail lock "another slurm.sh held $ROOT/lock for 600 s"

case "$ACTION" in
  start)
    if alive slurmctld && alive slurmd && [ -n "$(sinfo -h -o %T 2>/dev/null)" ]; then
      echo "slurm.sh: joining the running instance in $ROOT" >&2
    else
      stop_all  # leftovers of a crashed session
      rm -f "$ROOT"/owners/*
      STARTING=1
      start_all
      STARTING=0
    fi
    touch "$ROOT/owners/$OWNER"
    print_env
    ;;
  stop)
    rm -f "$ROOT/owners/$OWNER"
    others=$(live_owners | tr '\n' ' ')
    if [ -n "$others" ]; then
      echo "slurm.sh: still used by PID(s) $others; leaving the daemons running" >&2
    else
      stop_all
    fi
    ;;
  *) echo "usage: slurm.sh start|stop [--owner PID]" >&2; exit 2 ;;
esac
