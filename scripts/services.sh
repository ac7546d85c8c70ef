#!/usr/bin/env bash
# Starts PostgreSQL and Redis on this machine if they are not answering (the local development
# and CI set-up: PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on 127.0.0.1:6379).
# Sourced by run.sh, test.sh and .ci/run.
set -euo pipefail

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  echo "starting PostgreSQL" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && return 0
    sleep 0.5
  done
  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  return 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  echo "starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 60); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "Redis did not come up on 127.0.0.1:6379" >&2
  return 1
}

# Chromium and chromedriver for the dashboard's browser tests (Debian's packages; no download
# of a browser by a test tool).
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver" >&2
    return 0
  fi
  echo "installing chromium and chromium-driver" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
}

# The services the "past one machine" tests start on free ports of their own, from Debian's
# packages: HAProxy, Redis Sentinel, and redis-cli, which creates and reshards the Redis
# Cluster tests' clusters (redis-server comes with ensure_redis; PgBouncer with
# ensure_pgbouncer). The packages' own system services are not used; each test runs its private
# instance.
ensure_infra_tools() {
  local missing=()
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "the scale-out tests need Debian's ${missing[*]}: apt-get install ${missing[*]}" >&2
    return 0
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only the binaries are wanted: the packages' own services would hold the standard ports.
  for service in haproxy redis-sentinel; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$service" >/dev/null 2>&1 || true; fi
    service "$service" stop >/dev/null 2>&1 || true
  done
}

# PgBouncer 1.21 or later, for the test that runs the shop through PgBouncer in transaction mode
# (api/tests/api/pgbouncer.rs): sqlx names its prepared statements, which only PgBouncer's
# max_prepared_statements (1.21+) carries across server connections. Debian 12 ships 1.18, and
# Debian 13's 1.24 binary needs a newer libc, so Debian 13's source package is built here
# (about a minute) into a folder of its own; exports its executable as PGBOUNCER_BIN. If it
# cannot be built the other tests still run and that test fails saying what is missing.
PGBOUNCER_VERSION=1.24.1
PGBOUNCER_SHA256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
ensure_pgbouncer() {
  local prefix="$HOME/.cache/orderly-tools/pgbouncer-$PGBOUNCER_VERSION"
  if [ ! -f "$prefix/.installed" ]; then
    echo "building pgbouncer $PGBOUNCER_VERSION (Debian's source package) into $prefix" >&2
    if [ "$(id -u)" -eq 0 ] && ! dpkg -s libevent-dev >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libevent-dev pkg-config make gcc >/dev/null
    fi
    local build
    build="$(mktemp -d)"
    local tarball="pgbouncer_${PGBOUNCER_VERSION}.orig.tar.gz"
    if ! {
      curl -fsS -m 120 -o "$build/$tarball" "http://deb.debian.org/debian/pool/main/p/pgbouncer/$tarball" &&
        echo "$PGBOUNCER_SHA256  $build/$tarball" | sha256sum -c --quiet &&
        tar -xzf "$build/$tarball" -C "$build" &&
        (cd "$build/pgbouncer-$PGBOUNCER_VERSION" &&
          ./configure --quiet --prefix="$prefix" --without-cares --without-openssl >/dev/null &&
          make --quiet >/dev/null 2>&1 && make --quiet install >/dev/null 2>&1)
    }; then
      echo "could not build pgbouncer $PGBOUNCER_VERSION (needs deb.debian.org, gcc, make, pkg-config, libevent-dev)" >&2
      rm -rf "$build"
      return 0
    fi
    rm -rf "$build"
    touch "$prefix/.installed"
  fi
  export PGBOUNCER_BIN="$prefix/bin/pgbouncer"
}

# Schemathesis (PyPI), the OpenAPI fuzzer of the api's conformance test
# (api/tests/api/schemathesis.rs), at a pinned version in a venv of its own; exports its
# executable as SCHEMATHESIS_BIN. If it cannot be installed (no python3 venv, no network) the
# other tests still run and that test fails saying what is missing.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="$HOME/.cache/orderly-tools/schemathesis-$SCHEMATHESIS_VERSION"
  # The marker is written last: a venv whose install was cut short is installed again.
  if [ ! -f "$venv/.installed" ]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    if ! { python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; }; then
      echo "could not install schemathesis $SCHEMATHESIS_VERSION (needs python3 with venv, e.g. apt-get install python3-venv, and PyPI)" >&2
      return 0
    fi
    touch "$venv/.installed"
  fi
  export SCHEMATHESIS_BIN="$venv/bin/st"
}

# A command from a Debian package (`ensure_command wrk wrk`), installed when missing.
ensure_command() {
  local command="$1" package="$2"
  if command -v "$command" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "$command is missing: apt-get install $package" >&2
    return 1
  fi
  echo "installing $package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

# PostgreSQL user: `postgres` where it exists, else the current user (`root` here).
pg_user() {
  if psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then echo postgres; else whoami; fi
}
