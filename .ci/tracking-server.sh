# Sourced by .ci/run: a PostgreSQL cluster and an MLflow tracking server on it (served artifacts),
# both bound to 127.0.0.1 on free ports, for tests/test_server.py. start_tracking_services exports
# FUS2NET_TEST_MLFLOW_URI, FUS2NET_TEST_OPTUNA_STORAGE and PGPASSWORD (libpq reads the password
# from there, so no URI and no command line carries it), and FUS2NET_TEST_PG_SOCKET_DIR (where
# tests/test_security.py checks that no other user gets in); stop_tracking_services removes it all.

_as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi  # initdb refuses root
}

_free_port() {
  python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_healthy() {
  python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

start_tracking_services() {
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  CI_PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
  CI_SERVICES=$(mktemp -d /tmp/fus2net-ci-services.XXXXXX)
  chmod 755 "$CI_SERVICES"
  mkdir "$CI_SERVICES/pg" "$CI_SERVICES/artifacts"
  # The socket's folder: its owner's alone (mode 700), so no other user even reaches the socket.
  chmod 700 "$CI_SERVICES/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$CI_SERVICES/pg"; fi
  local pg_port ml_port
  pg_port=$(_free_port)
  ml_port=$(_free_port)
  PGPASSWORD=$(python -c 'import secrets; print(secrets.token_hex(16))')
  export PGPASSWORD

  # Only the owner gets in: on the socket, peer authentication (the OS user must be the role:
  # postgres, which has no password, so it cannot log in over TCP), and over TCP a password
  # (scram-sha-256; the fus2net role's is in PGPASSWORD). No `trust` anywhere.
  _as_postgres "$CI_PG_BIN/initdb" -D "$CI_SERVICES/pg/data" -U postgres --auth-local=peer \
    --auth-host=scram-sha-256 --no-sync >"$CI_SERVICES/initdb.log"
  _as_postgres "$CI_PG_BIN/pg_ctl" -D "$CI_SERVICES/pg/data" -l "$CI_SERVICES/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $CI_SERVICES/pg -c unix_socket_permissions=0700 -c fsync=off" \
    start >/dev/null
  # SQL on stdin, not in psql's argv, where any process listing would show the password
  printf '%s\n' "CREATE ROLE fus2net LOGIN PASSWORD '$PGPASSWORD';" \
    "CREATE DATABASE mlflow OWNER fus2net;" "CREATE DATABASE optuna OWNER fus2net;" |
    _as_postgres psql -h "$CI_SERVICES/pg" -p "$pg_port" -U postgres -q -v ON_ERROR_STOP=1 >/dev/null

  # The README's command: PostgreSQL as the backend store, artifacts served by the server.
  setsid mlflow server \
    --backend-store-uri "postgresql://fus2net@127.0.0.1:$pg_port/mlflow" \
    --artifacts-destination "$CI_SERVICES/artifacts" --serve-artifacts \
    --host 127.0.0.1 --port "$ml_port" --workers 2 >"$CI_SERVICES/mlflow.log" 2>&1 &
  CI_MLFLOW_PID=$!
  local _
  for _ in $(seq 1 240); do
    if _healthy "http://127.0.0.1:$ml_port/health"; then break; fi
    if ! kill -0 "$CI_MLFLOW_PID" 2>/dev/null; then break; fi
    sleep 1
  done
  if ! _healthy "http://127.0.0.1:$ml_port/health"; then
    echo "CI: the MLflow server did not start:" >&2
    tail -n 40 "$CI_SERVICES/mlflow.log" >&2
    return 1
  fi
  export FUS2NET_TEST_MLFLOW_URI="http://127.0.0.1:$ml_port"
  export FUS2NET_TEST_OPTUNA_STORAGE="postgresql://fus2net@127.0.0.1:$pg_port/optuna"
  export FUS2NET_TEST_PG_SOCKET_DIR="$CI_SERVICES/pg"
  echo "CI: PostgreSQL on 127.0.0.1:$pg_port, MLflow server on $FUS2NET_TEST_MLFLOW_URI"
}

stop_tracking_services() {
  if [ -n "${CI_MLFLOW_PID:-}" ]; then
    kill -TERM -- "-$CI_MLFLOW_PID" 2>/dev/null || true  # its session: uvicorn and its workers
    wait "$CI_MLFLOW_PID" 2>/dev/null || true
  fi
  if [ -n "${CI_SERVICES:-}" ] && [ -d "$CI_SERVICES/pg/data" ]; then
    _as_postgres "$CI_PG_BIN/pg_ctl" -D "$CI_SERVICES/pg/data" -m fast -w stop >/dev/null || true
  fi
  if [ -n "${CI_SERVICES:-}" ]; then rm -rf "$CI_SERVICES"; fi
}
