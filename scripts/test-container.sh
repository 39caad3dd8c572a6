#!/usr/bin/env bash
# The container tests' harness (test/container): builds and runs deploy/Dockerfile with Debian's podman, on a machine
# without a Docker daemon and without access to image registries.
#
#   scripts/test-container.sh setup   install podman & co. (Debian packages) and make the test base image
#   scripts/test-container.sh build   setup, then build deploy/Dockerfile on that base; prints the image's name
#   scripts/test-container.sh clean   remove this checkout's test image and the base image
#
# The base image stands in for the official node:20-bookworm-slim, which cannot be pulled here: Debian bookworm made
# by `debootstrap --variant=minbase`, with this machine's own Node 20 copied into /usr/local as the official image
# lays it out (bin/node, include/node for native add-ons, lib/node_modules/npm). The PostgreSQL clients come from
# Debian (PG_SOURCE=debian, bookworm's postgresql-client-15) because PGDG cannot be reached either.
# podman's settings are in test/container/containers.conf. Idempotent: quick when everything is there; builds
# reuse podman's layer cache, so only what changed is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CONTAINERS_CONF="$ROOT/test/container/containers.conf"

log() { printf '[test-container] %s\n' "$*" >&2; }

# Bump when the recipe of the base changes, so that an old base is not reused.
BASE_RECIPE=2
NODE_BIN=$(command -v node)
NODE_VERSION=$("$NODE_BIN" -p process.versions.node)
BASE_IMAGE="localhost/dbkeep-test-base:bookworm-node${NODE_VERSION}-r${BASE_RECIPE}"
# One test image per checkout (several checkouts may share this machine's image store).
TEST_IMAGE="localhost/dbkeep-test:$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
CACHE_DIR=/var/tmp/dbkeep-test-container
mkdir -p "$CACHE_DIR"

install_packages() {
  # command -> Debian package. crun is not used (runc is; see containers.conf); catatonit is a pod's infra process.
  declare -A tools=([podman]=podman [runc]=runc [debootstrap]=debootstrap [catatonit]=catatonit)
  local missing=()
  for cmd in "${!tools[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/libexec/podman/$cmd" ] || missing+=("${tools[$cmd]}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

make_base() {
  if podman image exists "$BASE_IMAGE"; then return 0; fi
  # Bases of an older recipe or another Node: removed, with the layers built on them.
  podman images --format '{{.Repository}}:{{.Tag}}' | grep "^${BASE_IMAGE%%:*}:" | xargs -r podman rmi -f >/dev/null 2>&1 || true
  local rootfs started
  started=$(date +%s)
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  log "making $BASE_IMAGE: debootstrap --variant=minbase bookworm (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 || {
    tail -20 "$CACHE_DIR/debootstrap.log" >&2
    rm -rf "$rootfs"
    return 1
  }
  # The sources of the official bookworm images: the release, its updates and security.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # What makes debian:bookworm-slim (and so node:20-bookworm-slim) slim: dpkg leaves out documentation, manual
  # pages and translations, of the base and of every package installed later.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
SLIM
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{groff,info,linda,locale,man}/* "$rootfs"/usr/share/lintian/overrides/*
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  # Node as the official image has it: /usr/local/{bin/node,include/node,lib/node_modules/npm}.
  local prefix node_modules include
  prefix=$(dirname "$(dirname "$(readlink -f "$NODE_BIN")")")
  node_modules=$(npm root -g)
  include="$prefix/include/node"
  [ -f "$include/node.h" ] || include=$(npm config get nodedir)/include/node
  install -d "$rootfs/usr/local/bin" "$rootfs/usr/local/include" "$rootfs/usr/local/lib/node_modules"
  cp "$(readlink -f "$NODE_BIN")" "$rootfs/usr/local/bin/node"
  cp -a "$include" "$rootfs/usr/local/include/node"
  cp -a "$node_modules/npm" "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["node"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "made $BASE_IMAGE in $(($(date +%s) - started)) s"
}

build_image() {
  local started version revision ca
  started=$(date +%s)
  version=$(node -p 'require("./package.json").version')
  revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  # This machine reaches the npm registry through a TLS-intercepting proxy whose CA only the host's bundle holds.
  ca=${NODE_EXTRA_CA_CERTS:-}
  [ -s "$ca" ] || ca=""
  log "building $TEST_IMAGE from deploy/Dockerfile (log: $CACHE_DIR/build.log)"
  if ! podman build \
    --file deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
    --format docker --layers --network host --jobs 2 \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg PG_SOURCE=debian --build-arg PG_VERSIONS=15 \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    ${ca:+--secret "id=ca,src=$ca"} \
    --tag "$TEST_IMAGE" . >"$CACHE_DIR/build.log" 2>&1; then
    tail -40 "$CACHE_DIR/build.log" >&2
    return 1
  fi
  log "built $TEST_IMAGE in $(($(date +%s) - started)) s"
}

# One setup or build at a time on this machine: the base image and the layer cache are shared.
exec 9>"$CACHE_DIR/lock"
flock 9

case "${1:-}" in
  setup)
    install_packages
    make_base
    ;;
  build)
    install_packages
    make_base
    build_image
    echo "$TEST_IMAGE"
    ;;
  clean)
    podman rmi -f "$TEST_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 setup|build|clean" >&2
    exit 2
    ;;
esac
