#!/usr/bin/env bash
# Prepares a machine for `npm test`: npm packages, the Debian tools the tests run, and the local servers.
# Idempotent and quick when everything is already there; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test-env] %s\n' "$*"; }

if [ ! -x node_modules/.bin/vitest ] || [ ! -d node_modules/better-sqlite3/build/Release ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm install --no-audit --no-fund
fi

# command -> Debian package
declare -A TOOLS=(
  [pg_dump]=postgresql-client [psql]=postgresql-client [pg_restore]=postgresql-client
  [zstd]=zstd [lz4]=lz4 [gzip]=gzip [tar]=tar [sqlite3]=sqlite3 [sha256sum]=coreutils
  [age]=age [age-keygen]=age [script]=bsdutils
  [redis-server]=redis-server [redis-cli]=redis-tools [openssl]=openssl
  [mariadb]=mariadb-client [mariadb-dump]=mariadb-client [mydumper]=mydumper
  [ssh-keygen]=openssh-client [sftp]=openssh-client [/usr/sbin/sshd]=openssh-server
  [restic]=restic [rclone]=rclone [tmux]=tmux
)
missing=()
for cmd in "${!TOOLS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${TOOLS[$cmd]}")
done
# The tests start a PostgreSQL server of their own only if none runs; its binaries come from the server package.
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  log "installing Debian packages: $pkgs"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432: start the cluster if it is installed but stopped.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1 || true)
    if [ -z "$ver" ]; then
      ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
      log "creating PostgreSQL $ver cluster"
      pg_createcluster "$ver" main >/dev/null
    fi
    log "starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  log "PostgreSQL is ready on 127.0.0.1:5432"
else
  log "PostgreSQL is NOT reachable on 127.0.0.1:5432 (tests that need it fail under CI=true)"
fi

# MariaDB on 127.0.0.1:3306 (root, empty password): start the installed server if it is stopped.
if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && [ -x /usr/sbin/mariadbd ]; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 30); do mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && break; sleep 1; done
fi
if mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  log "MariaDB is ready on 127.0.0.1:3306"
else
  log "MariaDB is NOT reachable on 127.0.0.1:3306 (tests that need it fail under CI=true)"
fi

# The container tests (test/container) build deploy/Dockerfile with podman. Their Debian packages, base image and
# image are prepared in the background while the rest of the suite runs: on a new machine that takes minutes, and
# the container group, run last, waits for it (scripts/test-container.sh takes a lock).
mkdir -p /var/tmp/dbkeep-test-container
nohup bash scripts/test-container.sh build >/var/tmp/dbkeep-test-container/prepare.log 2>&1 </dev/null &
log "preparing the container tests' image in the background (log: /var/tmp/dbkeep-test-container/prepare.log)"
