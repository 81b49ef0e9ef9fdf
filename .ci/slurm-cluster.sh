# Sourced by .ci/run and .ci/slurm-sweep.sh: a single-node SLURM cluster on this machine (Debian's
# munge, slurm-wlm, slurmdbd and mariadb-server; installed when missing), for .ci/slurm-sweep.sh.
# start_slurm_cluster starts a private munged (its own key and socket), MariaDB, slurmdbd,
# slurmctld and slurmd, all as root, all state in one temporary folder, the node registered with
# this machine's real CPUs and memory (`slurmd -C`) on 127.0.0.1, in partition `ci`; it waits
# until `sinfo` shows the node idle and exports SLURM_CONF (every SLURM command, sbatch's jobs
# included, reads it), FUS2NET_SLURM_PARTITION and FUS2NET_SLURM_CLUSTER=1. stop_slurm_cluster
# cancels what is left, stops the daemons it started (by their pid) and removes the folder.
# No systemd, no cgroups (proctrack/linuxproc, task/none): it runs in a container.
#
# Why an accounting database (slurmdbd on MariaDB): submitit, under Hydra's SLURM launcher, learns
# a job's state from `sacct` only. Without accounting sacct fails, the state stays UNKNOWN, and a
# task that ends without writing its result (scancel, SIGKILL, a lost node) keeps the launcher
# waiting forever (measured: still waiting 13 minutes after the scancel).

_slurm_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_slurm_node_idle() {
  sinfo --noheader --partition "$FUS2NET_SLURM_PARTITION" --format '%t' 2>/dev/null | grep -qx idle
}

_slurm_logs() {
  local log
  for log in "$CI_SLURM/munged.log" "$CI_SLURM/mariadb.log" "$CI_SLURM/slurmdbd.log" \
    "$CI_SLURM/slurmctld.log" "$CI_SLURM/slurmd.log"; do
    if [ -f "$log" ]; then
      echo "--- $log" >&2
      tail -n 25 "$log" >&2
    fi
  done
}

_slurm_mariadb() {
  mariadb --no-defaults --socket="$CI_SLURM/mariadb/mysqld.sock" -u root "$@"
}

start_slurm_cluster() {
  local tool
  for tool in munged slurmdbd slurmctld slurmd sbatch mariadbd; do
    if ! command -v "$tool" >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurm-wlm slurmdbd \
        mariadb-server >/dev/null
      break
    fi
  done
  local started=$SECONDS _
  CI_SLURM=$(mktemp -d /tmp/fus2net-ci-slurm.XXXXXX)
  chmod 755 "$CI_SLURM"
  mkdir -m 700 "$CI_SLURM/munge" "$CI_SLURM/mariadb"
  mkdir "$CI_SLURM/state" "$CI_SLURM/spool"

  # munge: a key of its own (never /etc/munge's), on a socket of its own.
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$CI_SLURM/munge/munge.key"
  else
    dd if=/dev/urandom of="$CI_SLURM/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 400 "$CI_SLURM/munge/munge.key"
  local socket="$CI_SLURM/munge/munge.socket"
  munged --force --socket="$socket" --key-file="$CI_SLURM/munge/munge.key" \
    --pid-file="$CI_SLURM/munge/munged.pid" --log-file="$CI_SLURM/munged.log" \
    --seed-file="$CI_SLURM/munge/munged.seed"
  CI_MUNGED_PID=$(cat "$CI_SLURM/munge/munged.pid")

  # MariaDB for slurmdbd: its own data folder, socket and port on 127.0.0.1; root gets in on the
  # socket only (unix_socket: the OS user root), slurmdbd over TCP with a random password.
  local db_port dbd_port db_pass
  db_port=$(_slurm_free_port)
  dbd_port=$(_slurm_free_port)
  db_pass=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  mariadb-install-db --no-defaults --user=root --datadir="$CI_SLURM/mariadb/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$CI_SLURM/mariadb-install.log" 2>&1
  mariadbd --no-defaults --user=root --datadir="$CI_SLURM/mariadb/data" \
    --socket="$CI_SLURM/mariadb/mysqld.sock" --bind-address=127.0.0.1 --port="$db_port" \
    --pid-file="$CI_SLURM/mariadb/mariadbd.pid" --log-error="$CI_SLURM/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 --skip-log-bin \
    >>"$CI_SLURM/mariadb.log" 2>&1 &
  CI_MARIADB_PID=$!
  for _ in $(seq 1 120); do
    if _slurm_mariadb -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  # SQL on stdin: no command line carries the password
  printf '%s\n' "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';" \
    "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" | _slurm_mariadb

  # The node as slurmd sees it (CPUs, sockets, cores, threads, RealMemory), under this host's name.
  local node node_line
  node=$(hostname -s)
  node_line=$(slurmd -C | head -n 1 | sed -e "s/^NodeName=[^ ]*/NodeName=$node NodeAddr=127.0.0.1/")
  FUS2NET_SLURM_PARTITION=ci
  (
    umask 077  # slurmdbd wants its config (it holds the password) readable by SlurmUser alone
    cat >"$CI_SLURM/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$socket
DbdAddr=127.0.0.1
DbdHost=$node
DbdPort=$dbd_port
SlurmUser=root
PidFile=$CI_SLURM/slurmdbd.pid
LogFile=$CI_SLURM/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
  )
  cat >"$CI_SLURM/slurm.conf" <<EOF
ClusterName=fus2net-ci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(_slurm_free_port)
SlurmdPort=$(_slurm_free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$CI_SLURM/state
SlurmdSpoolDir=$CI_SLURM/spool
SlurmctldPidFile=$CI_SLURM/slurmctld.pid
SlurmdPidFile=$CI_SLURM/slurmd.pid
SlurmctldLogFile=$CI_SLURM/slurmctld.log
SlurmdLogFile=$CI_SLURM/slurmd.log
PlugStackConfig=$CI_SLURM/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# the munge socket for slurmdbd connections (sacctmgr, sacct, slurmctld): ours, not /run/munge
AccountingStoragePass=$socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait seconds (SLURM's default: 30)
KillWait=10
MinJobAge=300
$node_line State=UNKNOWN
PartitionName=$FUS2NET_SLURM_PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$CI_SLURM/plugstack.conf"  # no SPANK plugins (not /etc/slurm's)
  export SLURM_CONF="$CI_SLURM/slurm.conf"

  slurmdbd  # reads the slurmdbd.conf beside SLURM_CONF
  for _ in $(seq 1 60); do
    if sacctmgr --noheader --parsable2 list cluster format=cluster 2>/dev/null |
      grep -qx fus2net-ci; then break; fi
    sacctmgr --immediate --quiet add cluster fus2net-ci >/dev/null 2>&1 || sleep 0.5
  done
  CI_SLURMDBD_PID=$(cat "$CI_SLURM/slurmdbd.pid" 2>/dev/null || true)
  slurmctld -i
  slurmd
  for _ in $(seq 1 60); do
    if _slurm_node_idle; then break; fi
    sleep 1
  done
  CI_SLURMCTLD_PID=$(cat "$CI_SLURM/slurmctld.pid" 2>/dev/null || true)
  CI_SLURMD_PID=$(cat "$CI_SLURM/slurmd.pid" 2>/dev/null || true)
  if ! _slurm_node_idle || ! sacct --noheader >/dev/null 2>&1; then
    echo "CI: the SLURM cluster did not come up (node idle, sacct answering):" >&2
    sinfo -N -l >&2 || true
    sacct >&2 || true
    _slurm_logs
    return 1
  fi
  export FUS2NET_SLURM_PARTITION FUS2NET_SLURM_CLUSTER=1
  echo "CI: SLURM cluster up in $((SECONDS - started)) s: node $node idle in partition" \
    "$FUS2NET_SLURM_PARTITION, accounting in slurmdbd ($node_line)"
}

stop_slurm_cluster() {
  local pid _
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${CI_SLURMCTLD_PID:-}" ]; then
    scancel --quiet --user "$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 30); do
      if [ -z "$(squeue --noheader 2>/dev/null)" ]; then break; fi
      sleep 1
    done
  fi
  for pid in "${CI_SLURMD_PID:-}" "${CI_SLURMCTLD_PID:-}" "${CI_SLURMDBD_PID:-}" \
    "${CI_MARIADB_PID:-}" "${CI_MUNGED_PID:-}"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.5
      done
    fi
  done
  if [ -n "${CI_MARIADB_PID:-}" ]; then wait "$CI_MARIADB_PID" 2>/dev/null || true; fi
  if [ -n "${CI_SLURM:-}" ]; then rm -rf "$CI_SLURM"; fi
  unset SLURM_CONF CI_SLURMD_PID CI_SLURMCTLD_PID CI_SLURMDBD_PID CI_MARIADB_PID CI_MUNGED_PID \
    FUS2NET_SLURM_CLUSTER
}
