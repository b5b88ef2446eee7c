#!/usr/bin/env bash
# Set up a fresh machine for fcl: check the tools it needs, install PostgreSQL's server when it is
# missing, create .venv with the project installed, and cache the Kafka broker's jars.
# Idempotent: on a bootstrapped machine it only checks, which takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bootstrap: error: $*" >&2; exit 1; }
say() { echo "bootstrap: $*" >&2; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "$PY not found: install Python 3.11 or newer (apt-get install -y python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$("$PY" -V 2>&1) found, fcl needs Python 3.11 or newer"

command -v java >/dev/null || die "java not found: install it (apt-get install -y openjdk-17-jre-headless; Kafka 4 needs Java 17+)"
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
[ -n "$java_major" ] && [ "$java_major" -ge 17 ] \
  || die "Java ${java_major:-of unknown version} found, Kafka 4 needs 17 or newer (apt-get install -y openjdk-17-jre-headless)"

kafka_version=$(sed -n 's/^KAFKA_VERSION = "\(.*\)"/\1/p' fcl/stack/kafka.py)
kafka_cache="${XDG_CACHE_HOME:-$HOME/.cache}/fcl/kafka/$kafka_version/libs"
if [ ! -f "$kafka_cache/.complete" ]; then
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven); it fetches the Kafka $kafka_version jars once"
fi

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ -z "${FCL_PG_BINDIR:-}" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing PostgreSQL from Debian's packages ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || die "apt-get install postgresql failed"
  else
    die "PostgreSQL server not found: install it (apt-get install -y postgresql) or set FCL_PG_BINDIR"
  fi
fi

# Headless Chromium drives the dashboard test (and its screenshot); Debian calls the package chromium.
if ! command -v chromium >/dev/null && [ -z "${FCL_CHROMIUM:-}" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing Chromium from Debian's packages (for the dashboard test) ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
  else
    say "warning: chromium not found (apt-get install -y chromium, or set FCL_CHROMIUM): the dashboard test will fail"
  fi
fi

# Debian's prometheus package brings promtool (the alert rules are checked with it) and the
# Prometheus server one integration test scrapes fcl's three processes with.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing Prometheus from Debian's packages (promtool and a server for the tests) ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || die "apt-get install prometheus failed"
  else
    say "warning: promtool or prometheus not found (apt-get install -y prometheus): the deploy checks will fail"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv ..."
  "$PY" -m venv .venv || die "could not create .venv (apt-get install -y python3-venv)"
fi
stamp=.venv/.fcl-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d" " -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing fcl and its dependencies into .venv (torch is large) ..."
  # uv (from PyPI) resolves the same versions as pip and downloads and installs them in parallel:
  # on the development VM, 21 s from an empty cache against pip's 2 minutes from a full one.
  # pip stays the fallback.
  if .venv/bin/python -m pip install -q --disable-pip-version-check "uv>=0.5,<1" >/dev/null 2>&1; then
    # --compile-bytecode as pip does: the first import of torch then costs seconds, not minutes
    .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e '.[all,dev,bench,stack]'
  else
    say "uv could not be installed; installing with pip (a few minutes) ..."
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[all,dev,bench,stack]'
  fi
  echo "$want" > "$stamp"
fi

.venv/bin/fcl stack fetch >/dev/null
say "ready (.venv, PostgreSQL server binaries, Apache Kafka $kafka_version jars, SeaweedFS)"
