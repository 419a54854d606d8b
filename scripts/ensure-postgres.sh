#!/usr/bin/env bash
# Find or start a PostgreSQL for the test suite and print its SQLAlchemy URL as the last
# line of stdout. Everything else goes to stderr.
#
#   scripts/ensure-postgres.sh              print a URL, starting a throwaway cluster if needed
#   scripts/ensure-postgres.sh stop FILE    stop the throwaway cluster described by FILE
#
# Order of preference:
#   1. $EMETERAI_TEST_POSTGRES_URL, printed unchanged.
#   2. A server on 127.0.0.1:$EMETERAI_TEST_POSTGRES_PORT (default 5432) that lets user
#      postgres in without a password.
#   3. A throwaway cluster: initdb into a temporary directory, trust auth, listening on
#      127.0.0.1 at the first free port from $EMETERAI_TEST_POSTGRES_FALLBACK_PORT (default
#      55432). Its description is written to $EMETERAI_TEST_POSTGRES_STATE (default
#      ${TMPDIR:-/tmp}/emeterai-test-postgres.state) so that `stop FILE` can remove it;
#      scripts/run-tests.sh does that at exit.
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
log() { echo "ensure-postgres: $*" >&2; }
die() { log "$*"; exit 1; }

url_for_port() { printf 'postgresql+psycopg://postgres@127.0.0.1:%s/postgres\n' "$1"; }

# Run a command as the cluster owner. PostgreSQL refuses to run as root, so when we are
# root the cluster belongs to the `postgres` system user (or `nobody` when there is none).
run_as() {
    local user="$1"
    shift
    if [[ "$user" == "$(id -un)" ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$user" -- "$@"
    else
        setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups -- "$@"
    fi
}

stop_cluster() {
    local state_file="$1"
    [[ -f "$state_file" ]] || return 0
    local cluster_dir="" cluster_pid="" cluster_user="" pg_bin=""
    # The state file is ours, written below as KEY=VALUE lines with quoted values.
    # shellcheck disable=SC1090
    source "$state_file"
    if [[ -n "$cluster_dir" && -d "$cluster_dir/data" ]]; then
        run_as "$cluster_user" "$pg_bin/pg_ctl" -D "$cluster_dir/data" -m immediate -w -t 30 \
            stop </dev/null >&2 || true
    fi
    if [[ -n "$cluster_pid" ]] && kill -0 "$cluster_pid" 2>/dev/null; then
        kill -KILL "$cluster_pid" 2>/dev/null || true
    fi
    # Only ever delete a directory this script created.
    if [[ "$cluster_dir" == */emeterai-pg.* && -d "$cluster_dir" ]]; then
        rm -rf -- "$cluster_dir"
    fi
    rm -f -- "$state_file"
    log "stopped throwaway cluster ${cluster_dir} (pid ${cluster_pid})"
}

if [[ "${1:-}" == "stop" ]]; then
    [[ $# -eq 2 ]] || die "usage: $0 stop STATE_FILE"
    stop_cluster "$2"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop STATE_FILE]"

# 1. An explicit URL wins.
if [[ -n "${EMETERAI_TEST_POSTGRES_URL:-}" ]]; then
    printf '%s\n' "$EMETERAI_TEST_POSTGRES_URL"
    exit 0
fi

# 2. A running server that lets postgres in. pg_isready alone only proves that something
# listens, so prefer a real query when psql is available.
probe_port="${EMETERAI_TEST_POSTGRES_PORT:-5432}"
server_answers() {
    local port="$1"
    if command -v psql >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=3 psql -X -w -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -Atc 'select 1' </dev/null >/dev/null 2>&1
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 3 -h 127.0.0.1 -p "$port" -U postgres -d postgres >/dev/null 2>&1
    else
        return 1
    fi
}
if server_answers "$probe_port"; then
    url_for_port "$probe_port"
    exit 0
fi
log "no usable PostgreSQL on 127.0.0.1:${probe_port}; starting a throwaway cluster"

# 3. A throwaway cluster.
find_pg_bin() {
    local initdb_path candidate
    if initdb_path="$(command -v initdb 2>/dev/null)"; then
        # Debian links /usr/local/bin/initdb and friends to the versioned directory.
        candidate="$(dirname "$(readlink -f "$initdb_path")")"
        if [[ -x "$candidate/pg_ctl" && -x "$candidate/postgres" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    fi
    # Debian and Ubuntu keep the server binaries off PATH; take the newest version.
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" && -x "$candidate/postgres" ]]
        then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

if ! pg_bin="$(find_pg_bin)"; then
    log "initdb/pg_ctl not found; installing postgresql with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries and no apt-get."
    as_root=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "no PostgreSQL server binaries; not root, no sudo."
        as_root=(sudo -n)
    fi
    apt_options=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_options[@]}" update </dev/null >&2
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_options[@]}" install --no-install-recommends postgresql </dev/null >&2
    pg_bin="$(find_pg_bin)" || die "postgresql installed but initdb/pg_ctl still not found."
fi

if [[ "$(id -u)" -eq 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then
        cluster_user=postgres
    else
        cluster_user=nobody
    fi
else
    cluster_user="$(id -un)"
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cluster_port="${EMETERAI_TEST_POSTGRES_FALLBACK_PORT:-55432}"
for _ in $(seq 1 100); do
    port_in_use "$cluster_port" || break
    cluster_port=$((cluster_port + 1))
done
port_in_use "$cluster_port" && die "no free port near ${EMETERAI_TEST_POSTGRES_FALLBACK_PORT:-55432}"

state_file="${EMETERAI_TEST_POSTGRES_STATE:-${TMPDIR:-/tmp}/emeterai-test-postgres.state}"
state_file="$(readlink -m "$state_file")"
# The cluster owner must be able to reach the directory, so keep it out of a private TMPDIR
# when we switch users.
if [[ "$cluster_user" == "$(id -un)" ]]; then
    cluster_dir="$(mktemp -d "${TMPDIR:-/tmp}/emeterai-pg.XXXXXX")"
else
    cluster_dir="$(mktemp -d /tmp/emeterai-pg.XXXXXX)"
    chown "$cluster_user" "$cluster_dir"
fi
cluster_pid=""

write_state() {
    {
        printf 'cluster_dir=%q\n' "$cluster_dir"
        printf 'cluster_pid=%q\n' "$cluster_pid"
        printf 'cluster_user=%q\n' "$cluster_user"
        printf 'pg_bin=%q\n' "$pg_bin"
    } >"$state_file"
}
# Written before starting so that an interrupted start is still cleaned up.
write_state
cluster_started=0
on_exit() {
    local status=$?
    if [[ $cluster_started -eq 0 ]]; then
        log "could not start the throwaway cluster; server log follows"
        tail -n 40 "$cluster_dir/server.log" >&2 2>/dev/null || true
        stop_cluster "$state_file"
        [[ $status -ne 0 ]] || status=1
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run from the cluster directory: the owner may not be allowed into our working directory.
cd "$cluster_dir"
run_as "$cluster_user" "$pg_bin/initdb" -D "$cluster_dir/data" -U postgres -A trust \
    -E UTF8 --locale=C --no-sync </dev/null >"$cluster_dir/initdb.log" 2>&1 \
    || { cat "$cluster_dir/initdb.log" >&2; exit 1; }
# Durability is pointless for a throwaway cluster; concurrency tests need connections.
server_options="-c listen_addresses=127.0.0.1 -p ${cluster_port}"
server_options+=" -c unix_socket_directories=${cluster_dir}"
server_options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
server_options+=" -c max_connections=200"
run_as "$cluster_user" "$pg_bin/pg_ctl" -D "$cluster_dir/data" -l "$cluster_dir/server.log" \
    -o "$server_options" -w -t 60 start </dev/null >&2
cluster_pid="$(head -n 1 "$cluster_dir/data/postmaster.pid")"
write_state
cluster_started=1

log "throwaway cluster in ${cluster_dir} (pid ${cluster_pid}, port ${cluster_port});" \
    "stop it with: ${script_path} stop ${state_file}"
url_for_port "$cluster_port"
