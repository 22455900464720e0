#!/usr/bin/env bash
# Property-based API tests: schemathesis against the real binary and its /openapi.json, on a
# fresh SQLite file and on a fresh PostgreSQL database, with an admin token. Any finding of
# the checks below fails the run.
#
#   bash .ci/schemathesis.sh [sqlite|postgres]...   (default: both)
#
# Needs python3 (venv), the debug binary (built here when missing) and, for PostgreSQL,
# ORDERFLOW_TEST_DATABASE_URL (an admin connection; a database `orderflow_schemathesis` is
# created and dropped on it).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# Cases per operation and phase: about 4,000 cases and half a minute per backend.
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-150}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

target="${CARGO_TARGET_DIR:-target}"
venv="$(cd "$(dirname "$target")" && pwd)/$(basename "$target")/schemathesis-venv"
work="$(mktemp -d)"
server_pid=""
pg_db=orderflow_schemathesis
pg_admin="${ORDERFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
drop_pg() { psql "$pg_admin" -qtAc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true; }
cleanup() {
  stop_server
  drop_pg
  rm -rf "$work"
}
trap cleanup EXIT

# Python 3.12 or later: on 3.11, CPython's "AST constructor recursion depth mismatch" bug
# breaks hypothesis while it builds large arrays (maxItems 1000). pyenv's are not on PATH
# unless selected, so look for them too.
find_python() {
  local py
  for py in ${SCHEMATHESIS_PYTHON:-} \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 \
      /root/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) \
    python3.13 python3.12 python3; do
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  echo "WARNING: no Python 3.12+ found; schemathesis may fail on large arrays" >&2
  echo python3
}

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q " $SCHEMATHESIS_VERSION\$"; then
  python="$(find_python)"
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv ($("$python" --version))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -q -p orderflow
# A copy: a build in another work tree sharing the target folder cannot swap it.
bin="$work/orderflow"
cp "$target/debug/orderflow" "$bin"

# Runs schemathesis against a server on database URL $2; $1 names the backend.
run_backend() {
  local name="$1" url="$2" log="$work/$1.log" token addr
  "$bin" migrate --database-url "$url" >/dev/null
  token="$("$bin" clients create schemathesis-admin --role admin --json --database-url "$url" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
  # Port 0: the server logs the address it bound. tower_http at debug logs every response
  # with its latency, for the slowest-requests summary below.
  RUST_LOG=info,sqlx::postgres::notice=warn,tower_http=debug \
    "$bin" serve --listen 127.0.0.1:0 --database-url "$url" --log-format json </dev/null >"$log" 2>&1 &
  server_pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr="$(grep -o '"addr":"[^"]*"' "$log" | head -n 1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "FATAL: the server on $name did not start:" >&2
    cat "$log" >&2
    return 1
  fi
  echo "schemathesis on $name (http://$addr, at most $MAX_EXAMPLES cases per operation and phase)"
  local started=$SECONDS rc=0
  # From the scratch folder: schemathesis keeps its crash cache in the working directory.
  (cd "$work" && timeout 600 "$venv/bin/schemathesis" run "http://$addr/openapi.json" ${SCHEMATHESIS_ARGS:-} \
    --header "Authorization: Bearer $token" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --phases examples,coverage,fuzzing,stateful \
    --request-timeout 30 \
    --workers 2 \
    --generation-database none \
    --no-color </dev/null) || rc=$?
  echo "schemathesis on $name: exit $rc in $((SECONDS - started)) s"
  # The slowest answers (all of them when the run failed): a request held near
  # --request-timeout shows here with its method and path.
  slowest "$log" "$([ "$rc" -eq 0 ] && echo 3 || echo 15)"
  if [ "$rc" -ne 0 ]; then
    echo "last lines of the server log on $name:" >&2
    grep -v '"tower_http' "$log" | tail -n 20 >&2 || true
  fi
  if grep -q '"level":"ERROR"' "$log"; then
    echo "server errors logged on $name:" >&2
    grep '"level":"ERROR"' "$log" | tail -n 20 >&2
  fi
  stop_server
  return "$rc"
}

# Prints the $2 slowest responses of the JSON server log $1.
slowest() {
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1], errors="replace"):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    f = v.get("fields", {})
    if f.get("message") != "finished processing request":
        continue
    value, _, unit = str(f.get("latency", "0 ms")).partition(" ")
    ms = float(value) * {"s": 1000, "ms": 1, "us": 0.001, "µs": 0.001, "ns": 1e-6}.get(unit, 1)
    span = v.get("span", {})
    rows.append((ms, f.get("status", "?"), span.get("method", "?"), span.get("uri", "?")))
rows.sort(reverse=True)
print(f"{len(rows)} responses; slowest:")
for ms, status, method, uri in rows[: int(sys.argv[2])]:
    print(f"  {ms:9.1f} ms  {status}  {method} {uri[:120]}")
PY
}

backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(sqlite postgres)
status=0
for backend in "${backends[@]}"; do
  case "$backend" in
    sqlite) run_backend sqlite "sqlite://$work/orderflow.db" || status=1 ;;
    postgres)
      drop_pg
      psql "$pg_admin" -qtAc "CREATE DATABASE $pg_db" >/dev/null
      run_backend postgres "${pg_admin%/*}/$pg_db" || status=1
      drop_pg
      ;;
    *) echo "unknown backend $backend (sqlite or postgres)" >&2; exit 2 ;;
  esac
done
exit "$status"
