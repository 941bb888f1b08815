# Shared by scripts/demo and scripts/test: idempotent set-up of everything the
# project needs on a fresh Debian machine, builds, and a throwaway PostgreSQL
# and MariaDB (standing in for Cloud SQL for MySQL), and Redis.
# Source it; it sets -euo pipefail.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A fixed target dir outside the clone, so CI and every clone reuse one build cache.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gcp-db-connector/target}
WASM_DIR=$CARGO_TARGET_DIR/wasm32-wasip2/wasm
export GCP_DB_CONNECTOR_WASM=$WASM_DIR/gcp_db_connector_component.wasm
# The world connector-component-kv: the same component importing wasi:keyvalue.
export GCP_DB_CONNECTOR_KV_WASM=$WASM_DIR/gcp_db_connector_component_kv.wasm
export GCPDB_MESSAGES_HTTP=$WASM_DIR/messages_http.wasm
export GCPDB_MESSAGES_COMPOSED=$WASM_DIR/messages_composed.wasm
# examples/python-messages, built by componentize-py (build_python_app).
export GCPDB_PYTHON_MESSAGES=$WASM_DIR/python_messages.wasm
# The Spin example without Spin's key-value store, which wasmtime lacks ...
export GCPDB_SPIN_MESSAGES=$WASM_DIR/spin_messages_nokv.wasm
# ... and with it (imports spin:key-value, which the project's host provides).
export GCPDB_SPIN_MESSAGES_KV=$WASM_DIR/spin_messages.wasm
export GCPDB_PG_QUERY=$WASM_DIR/pg-query.wasm
export GCPDB_MYSQL_QUERY=$WASM_DIR/mysql-query.wasm
export GCPDB_EMULATOR=$CARGO_TARGET_DIR/release/gcp-emulator
export GCPDB_HOST=$CARGO_TARGET_DIR/release/gcp-db-host
# The wasmtime CLI, for the tests that run the README's `wasmtime serve` lines.
WASMTIME_VERSION=48.0.8
export GCPDB_WASMTIME=${GCPDB_WASMTIME:-$HOME/.cargo/bin/wasmtime}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
trap 'echo "${BASH_SOURCE[0]:-$0}: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The wasm target, PostgreSQL, MariaDB and Redis, installed only when missing;
# with `setup --wasmtime-cli`, the wasmtime CLI too (the tests and benchmarks
# run it; the demo uses the project's embedded host and does not).
setup() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    log "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
  fi
  if [ "${1:-}" = --wasmtime-cli ] &&
    [ "$("$GCPDB_WASMTIME" --version 2>/dev/null)" != "wasmtime $WASMTIME_VERSION" ]; then
    # The same major version as the embedded host; only what `serve` and
    # `run` with -S http, keyvalue and p3 need (about 15 minutes cold).
    log "installing wasmtime-cli $WASMTIME_VERSION from crates.io"
    cargo install --locked wasmtime-cli --version "$WASMTIME_VERSION" --no-default-features \
      --features run,serve,cranelift,component-model,component-model-async,wasi-http,wasi-keyvalue,parallel-compilation,pooling-allocator \
      --root "$(dirname "$(dirname "$GCPDB_WASMTIME")")"
  fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    log "installing MariaDB from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
  fi
  # The shared store of several host processes (tests/redis_store.rs, bench/run.py).
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
}

# build [wasm-only]: the component and example guests, then (unless wasm-only)
# the emulator and the wasmtime host.
build() {
  log "building the component and the example guests (wasm32-wasip2)"
  # Separate builds, because one build unifies features: the component with
  # wasi:keyvalue (kept under its own name), the Spin example with and without
  # Spin's key-value store, the other examples (messages-http turns
  # wasi-keyvalue on in the library), and last the plain component alone.
  (cd "$ROOT" && cargo build --locked --profile wasm --target wasm32-wasip2 \
    -p gcp-db-connector-component --features keyvalue)
  cp "$GCP_DB_CONNECTOR_WASM" "$GCP_DB_CONNECTOR_KV_WASM"
  (cd "$ROOT" && cargo build --locked --profile wasm --target wasm32-wasip2 \
    -p spin-messages --no-default-features)
  cp "$WASM_DIR/spin_messages.wasm" "$GCPDB_SPIN_MESSAGES"
  (cd "$ROOT" && cargo build --locked --profile wasm --target wasm32-wasip2 -p spin-messages)
  (cd "$ROOT" && cargo build --locked --profile wasm --target wasm32-wasip2 \
    -p pg-query -p mysql-query -p messages-http -p messages-composed)
  (cd "$ROOT" && cargo build --locked --profile wasm --target wasm32-wasip2 \
    -p gcp-db-connector-component)
  if [ "${1:-}" = wasm-only ]; then return; fi
  log "building the emulator and the wasmtime host"
  (cd "$ROOT" && cargo build --locked --release -p gcp-emulator -p gcp-db-host)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_postgres DIR: a throwaway cluster on a free loopback port. Sets PGPORT.
# Roles: postgres (trust, for tests), app / app-password (SCRAM, like a real app),
# and the emulator's two IAM principals (trust: the emulator's proxy admits them).
start_postgres() {
  local dir=$1 bin run=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PGPORT=$(free_port)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
    chown postgres: "$dir"
    chmod o+x "$(dirname "$dir")"  # mktemp -d makes the parent 0700
    run=(runuser -u postgres --)
  fi
  if ! "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    return 1
  fi
  {
    echo "host all app 127.0.0.1/32 scram-sha-256"
    echo "host all all 127.0.0.1/32 trust"
  } >"$dir/data/pg_hba.conf"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-p $PGPORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  "$bin/psql" -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'app-password';
-- The emulator's IAM principals, as Cloud SQL names IAM database users.
CREATE ROLE "connector-sa@emulator-project.iam" LOGIN;
CREATE ROLE "dev-user@example.com" LOGIN;
-- The service account the emulator's impersonation files impersonate.
CREATE ROLE "target-sa@emulator-project.iam" LOGIN;
CREATE TABLE messages (id serial PRIMARY KEY, body text NOT NULL, created timestamptz DEFAULT now());
INSERT INTO messages (body) VALUES ('hello from Cloud SQL'), ('through a wasm component');
GRANT SELECT, INSERT ON messages TO app;
GRANT USAGE ON SEQUENCE messages_id_seq TO app;
SQL
  export PGPORT
  PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
}

stop_postgres() { [ -n "${PG_STOP+x}" ] && "${PG_STOP[@]}" >/dev/null 2>&1 || true; }

# start_mariadb DIR: a throwaway MariaDB (Cloud SQL for MySQL's stand-in) on a
# free loopback port. Sets MYSQLPORT. Users: root (socket only, for set-up),
# app / app-password (mysql_native_password, like a real app), and the
# emulator's two IAM principals as Cloud SQL names MySQL IAM users (the email
# up to the @), without a password: the emulator's proxy admits them. Database
# appdb, table messages with the same two rows as PostgreSQL.
start_mariadb() {
  local dir=$1 bin run=() i
  bin=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  MYSQLPORT=$(free_port)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then  # mariadbd refuses to run as root
    chown mysql:mysql "$dir"
    chmod o+x "$(dirname "$dir")"  # mktemp -d makes the parent 0700
    run=(runuser -u mysql --)
  fi
  if ! "${run[@]}" mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1; then
    cat "$dir/install.log" >&2
    return 1
  fi
  "${run[@]}" "$bin" --no-defaults --datadir="$dir/data" --port="$MYSQLPORT" \
    --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --skip-name-resolve --innodb-flush-log-at-trx-commit=0 >"$dir/mysqld.log" 2>&1 &
  MARIADB_PID=$!
  MARIADB_SOCKET=$dir/mysqld.sock
  for i in $(seq 1 100); do
    mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" -uroot ping >/dev/null 2>&1 && break
    if ! kill -0 "$MARIADB_PID" 2>/dev/null || [ "$i" = 100 ]; then
      cat "$dir/mysqld.log" >&2
      return 1
    fi
    sleep 0.1
  done
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot <<'SQL'
CREATE DATABASE appdb;
CREATE TABLE appdb.messages (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO appdb.messages VALUES (1, 'hello from Cloud SQL'), (2, 'through a wasm component');
CREATE USER 'app'@'%' IDENTIFIED BY 'app-password';
CREATE USER 'app'@'localhost' IDENTIFIED BY 'app-password';
-- The emulator's IAM principals, as Cloud SQL names IAM database users for MySQL.
CREATE USER 'connector-sa'@'%', 'connector-sa'@'localhost', 'dev-user'@'%', 'dev-user'@'localhost';
-- The service account the emulator's impersonation files impersonate.
CREATE USER 'target-sa'@'%', 'target-sa'@'localhost';
GRANT SELECT, INSERT ON appdb.* TO 'app'@'%', 'app'@'localhost',
  'connector-sa'@'%', 'connector-sa'@'localhost', 'dev-user'@'%', 'dev-user'@'localhost',
  'target-sa'@'%', 'target-sa'@'localhost';
SQL
  export MYSQLPORT
}

stop_mariadb() {
  if [ -n "${MARIADB_PID:-}" ]; then
    mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" -uroot shutdown >/dev/null 2>&1 ||
      kill "$MARIADB_PID" 2>/dev/null || true
    wait "$MARIADB_PID" 2>/dev/null || true
    MARIADB_PID=
  fi
}

# start_redis DIR: a throwaway Redis on a free loopback port, nothing saved (no
# RDB, no AOF), its files in DIR. Sets REDIS_PORT. The store several
# `gcp-db-host serve --redis` processes share in tests/redis_store.rs and bench/run.py.
start_redis() {
  local dir=$1 i
  REDIS_PORT=$(free_port)
  mkdir -p "$dir"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!
  for i in $(seq 1 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    if ! kill -0 "$REDIS_PID" 2>/dev/null || [ "$i" = 100 ]; then
      cat "$dir/redis.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  export REDIS_PORT
}

stop_redis() {
  if [ -n "${REDIS_PID:-}" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
  fi
}

# python_env: a venv with tests/python/requirements.txt (Google's Python connector,
# a second client of the emulator) and componentize-py (for the Python example),
# made once; pip runs again only when the requirements change. Sets GCPDB_PYTHON.
python_env() {
  local venv=${GCPDB_VENV:-$HOME/.cache/gcp-db-connector/venv}
  local reqs=("$ROOT/tests/python/requirements.txt" "$ROOT/examples/python-messages/requirements-build.txt")
  local sum
  sum=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
  mkdir -p "$(dirname "$venv")"
  (
    flock 9  # concurrent runs on one machine share the venv
    if [ ! -x "$venv/bin/python" ]; then
      rm -rf "$venv"
      if ! python3 -m venv "$venv" >/dev/null 2>&1; then  # Debian: venv needs python3-venv
        rm -rf "$venv"
        log "installing python3-venv from Debian"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
      fi
    fi
    if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$sum" ]; then
      log "installing tests/python/requirements.txt and componentize-py into $venv"
      "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "${reqs[0]}" -r "${reqs[1]}"
      echo "$sum" >"$venv/.requirements.sha256"
    fi
  ) 9>"$venv.lock"
  export GCPDB_PYTHON=$venv/bin/python
}

# build_python_app: examples/python-messages into $GCPDB_PYTHON_MESSAGES with its
# own build.sh, as the README has users run it (after python_env).
build_python_app() {
  log "building examples/python-messages (componentize-py)"
  COMPONENTIZE_PY=$(dirname "$GCPDB_PYTHON")/componentize-py PYTHON=$GCPDB_PYTHON \
    BUILD_DIR=$CARGO_TARGET_DIR/python-messages \
    "$ROOT/examples/python-messages/build.sh" "$GCPDB_PYTHON_MESSAGES" >/dev/null
}
