#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl) are on this machine, because the test
# suite starts a throwaway cluster with them (tests/pgcluster.py). Idempotent and silent when
# they are already there. As root with apt it installs Debian's `postgresql` package; otherwise
# it says how to. Without them the PostgreSQL tests skip, or fail if
# INTEGRATIONS_REQUIRE_POSTGRES=1 (CI), so this script exits non-zero only in that case.
set -euo pipefail

# Same search order as tests/pgcluster.py: $PG_BIN, PATH, /usr/lib/postgresql/*/bin (newest
# first), /usr/local/pgsql/bin, /usr/local/bin.
find_pg_bin() {
    local dir
    if [[ -n "${PG_BIN:-}" ]]; then
        [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] && { echo "$PG_BIN"; return 0; }
        return 1
    fi
    if dir=$(command -v initdb 2>/dev/null); then
        dir=$(dirname "$(readlink -f "$dir")")
        [[ -x "$dir/pg_ctl" ]] && { echo "$dir"; return 0; }
    fi
    while read -r dir; do
        [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && { echo "$dir"; return 0; }
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn; \
             echo /usr/local/pgsql/bin; echo /usr/local/bin)
    return 1
}

required() {
    case "${INTEGRATIONS_REQUIRE_POSTGRES:-}" in 1 | true | yes) return 0 ;; *) return 1 ;; esac
}

# PostgreSQL will not run as root; as root the test cluster runs as the `postgres` user.
ensure_os_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    id postgres >/dev/null 2>&1 && return 0
    echo "ensure-postgres: creating the 'postgres' system user (the test cluster runs as it)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /bin/sh postgres
}

if find_pg_bin >/dev/null; then
    ensure_os_user
    exit 0
fi

if [[ -n "${PG_BIN:-}" ]]; then
    echo "ensure-postgres: PG_BIN=$PG_BIN holds no executable initdb and pg_ctl" >&2
    exit 1
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server binaries not found; installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql </dev/null >/dev/null
    if bin=$(find_pg_bin); then
        ensure_os_user
        echo "ensure-postgres: installed; using $bin"
        exit 0
    fi
    echo "ensure-postgres: installed postgresql but still no initdb/pg_ctl found" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-postgres: PostgreSQL server binaries (initdb, pg_ctl) not found.
  The PostgreSQL half of the test suite needs them (it starts its own throwaway cluster).
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install postgresql
  Fedora/RHEL:    sudo dnf install postgresql-server
  macOS:          brew install postgresql@15
  Or point PG_BIN at a directory holding initdb and pg_ctl.
MSG
if required; then
    echo "ensure-postgres: INTEGRATIONS_REQUIRE_POSTGRES is set, so this is an error" >&2
    exit 1
fi
echo "ensure-postgres: continuing; the PostgreSQL tests will be skipped" >&2
