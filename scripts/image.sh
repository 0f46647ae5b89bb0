#!/usr/bin/env bash
# Builds ticketmeter's container images and smoke-tests them.
#
#   scripts/image.sh          build both targets, then smoke-test them
#   scripts/image.sh build    build both targets only
#   scripts/image.sh smoke    smoke-test the images already built
#
# Images: ticketmeter:local (the default target, production) and
# ticketmeter-double:local (`--target double`), the names docker-compose.yml
# uses; IMAGE and DOUBLE_IMAGE override them.
#
# Engine: Docker when `docker info` answers (it pulls the base images as
# usual). Otherwise buildah from Debian (installed when missing) with chroot
# isolation, which needs no daemon and no user namespaces, on overlay storage
# where the kernel mounts it and vfs (a full copy of the file system per
# layer: tens of GB for these builds) where it does not; ENGINE=docker|buildah
# and BUILDAH_DRIVER=overlay|vfs force a choice. When buildah cannot pull a
# base image the Dockerfile names, the script makes it locally and says so:
#   debian:bookworm-slim  debootstrap (minbase, bookworm), trimmed as the
#                         official slim image is (no docs, man pages,
#                         locales or apt lists)
#   rust:1.95-bookworm    that image plus gcc, libc6-dev, ca-certificates and
#                         this machine's Rust toolchain (it must be 1.95.x)
#                         under /usr/local/rustup and /usr/local/cargo, as in
#                         the official image; it also trusts this machine's
#                         local CA certificates (/usr/local/share/ca-certificates),
#                         so cargo reaches crates.io through the same
#                         TLS-inspecting proxy as the host, if there is one.
#                         Only the builder does: the runtime base never has them.
#
# The smoke test runs on this machine's loopback, with host networking: the
# OpenMeter double (`ticketmeter double`, built from this checkout) and a
# tansu broker (SQLite storage) on the host, and the image's binary in a
# container against them. It checks --version, the non-root user, that the
# production image has no `double`, `bootstrap`, `check`, `run` delivering
# every event, the HEALTHCHECK command while running, SIGTERM ending it with
# exit 0 within SHUTDOWN_TIMEOUT with its offsets committed, and the `double`
# target serving the double; it prints each figure as a FIGURE line and the
# image sizes. Not part of scripts/test.sh (minutes of image building).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

IMAGE="${IMAGE:-ticketmeter:local}"
DOUBLE_IMAGE="${DOUBLE_IMAGE:-ticketmeter-double:local}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# How long SIGTERM may take: the collector's SHUTDOWN_TIMEOUT (its default).
SHUTDOWN_TIMEOUT_SECS=25
EVENTS=200
CUSTOMERS=10

FIGURES=()
MADE_BASES=()
CLEANUP=()

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }
figure() {
  FIGURES+=("$*")
  printf 'FIGURE %s\n' "$*" >&2
}
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP[i]}" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
  say "installing $* (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------ engine --

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  else
    ENGINE=buildah
  fi
fi
# buildah's storage driver: the one its store already has, else overlay when
# the kernel mounts it here, else vfs.
buildah_driver() {
  local root=/var/lib/containers/storage probe ctr
  if [ -d "$root/overlay-images" ]; then
    echo overlay
  elif [ -d "$root/vfs-images" ]; then
    echo vfs
  else
    probe=$(mktemp -d /var/tmp/ticketmeter-overlay-probe.XXXXXX)
    if ctr=$(buildah --root "$probe/root" --runroot "$probe/run" --storage-driver overlay from --quiet scratch 2>/dev/null) &&
      buildah --root "$probe/root" --runroot "$probe/run" --storage-driver overlay mount "$ctr" >/dev/null 2>&1; then
      echo overlay
    else
      echo vfs
    fi
    buildah --root "$probe/root" --runroot "$probe/run" --storage-driver overlay rm --all >/dev/null 2>&1 || true
    mount | awk -v p="$probe" 'index($3, p) == 1 { print $3 }' | sort -r | xargs -r -n1 umount 2>/dev/null || true
    rm -rf "$probe"
  fi
}

case "$ENGINE" in
  docker) ;;
  buildah)
    command -v buildah >/dev/null 2>&1 || apt_install buildah
    export BUILDAH_ISOLATION=chroot
    BUILDAH_DRIVER=${BUILDAH_DRIVER:-$(buildah_driver)}
    say "buildah with $BUILDAH_DRIVER storage, chroot isolation"
    ;;
  *) die "ENGINE must be docker or buildah, not $ENGINE" ;;
esac

bah() { buildah --storage-driver "$BUILDAH_DRIVER" "$@"; }

have_image() {
  case "$ENGINE" in
    docker) docker image inspect "$1" >/dev/null 2>&1 ;;
    buildah) bah inspect --type image "$1" >/dev/null 2>&1 ;;
  esac
}

# An image's size as its engine reports it (decimal MB).
image_size() {
  case "$ENGINE" in
    docker) docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }' ;;
    buildah)
      local id
      id=$(bah inspect --type image --format '{{.FromImageID}}' "$1")
      bah images --json | jq -r --arg id "${id:0:12}" '.[] | select(.id == $id) | .size'
      ;;
  esac
}

# ------------------------------------------------------------- base images --

# The images the Dockerfile builds FROM that are not its own stages.
external_bases() {
  awk 'toupper($1) == "FROM" {
         if (!($2 in stage)) print $2
         if (toupper($3) == "AS") stage[$4] = 1
       }' Dockerfile | sort -u
}

# Commits the root filesystem in $1 as image $2.
commit_rootfs() {
  local rootfs=$1 ref=$2 ctr mnt
  ctr=$(bah from --quiet scratch)
  CLEANUP+=("bah rm $ctr")
  mnt=$(bah mount "$ctr")
  cp -a "$rootfs/." "$mnt/"
  bah umount "$ctr" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --created-by "scripts/image.sh (debootstrap)" "$ctr"
  bah commit --quiet --format docker --rm "$ctr" "$ref" >/dev/null
}

make_debian_slim() {
  local ref=$1 suite rootfs
  suite=${ref#*:}
  suite=${suite%-slim}
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  rootfs=$(mktemp -d /var/tmp/ticketmeter-rootfs.XXXXXX)
  CLEANUP+=("rm -rf $rootfs")
  say "debootstrap --variant=minbase $suite from $DEBIAN_MIRROR"
  debootstrap --variant=minbase "$suite" "$rootfs" "$DEBIAN_MIRROR" >/dev/null
  # As the official slim image: later package installs leave out docs, man
  # pages and locales; no package lists or caches are kept.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  find "$rootfs/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/tmp/*
  commit_rootfs "$rootfs" "$ref"
}

make_rust() {
  local ref=$1 tag want version triple toolchain debian ctr mnt tool
  tag=${ref#*:}
  want=${tag%%-*}
  debian="debian:${tag#*-}-slim"
  version=$(rustc --version | awk '{print $2}')
  [ "$version" = "$want" ] || [ "${version%.*}" = "$want" ] ||
    die "cannot make $ref: this machine's rustc is $version"
  triple=$(rustc -vV | sed -n 's/^host: //p')
  toolchain=$(readlink -f "$(dirname "$(rustup which rustc)")/..")
  ensure_base "$debian"
  ctr=$(bah from --quiet --pull=false "$debian")
  CLEANUP+=("bah rm $ctr")
  say "$ref: $debian + gcc, libc6-dev, ca-certificates + rustc $version from $toolchain"
  bah run --network host "$ctr" -- sh -c 'apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*'
  mnt=$(bah mount "$ctr")
  mkdir -p "$mnt/usr/local/rustup/toolchains" "$mnt/usr/local/cargo/bin"
  cp -a "$toolchain" "$mnt/usr/local/rustup/toolchains/$version-$triple"
  rm -rf "$mnt/usr/local/rustup/toolchains/$version-$triple/share/doc"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$version-$triple" \
    >"$mnt/usr/local/rustup/settings.toml"
  install -m 0755 "$(readlink -f "$(command -v rustup)")" "$mnt/usr/local/cargo/bin/rustup"
  for tool in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt rust-gdb rust-lldb; do
    ln -sf rustup "$mnt/usr/local/cargo/bin/$tool"
  done
  # Cargo in the build reaches crates.io the way this machine does: behind a
  # TLS-inspecting egress proxy that means trusting the same local CAs.
  local cas=(/usr/local/share/ca-certificates/*.crt)
  if [ -e "${cas[0]}" ]; then
    say "$ref: trusting this machine's local CA certificates (${cas[*]##*/})"
    cp "${cas[@]}" "$mnt/usr/local/share/ca-certificates/"
  fi
  bah umount "$ctr" >/dev/null
  bah run "$ctr" -- update-ca-certificates >/dev/null
  bah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" --created-by "scripts/image.sh (host toolchain)" "$ctr"
  bah run "$ctr" -- rustc --version | grep -q "^rustc $version " ||
    die "$ref: rustc does not run in the image"
  bah commit --quiet --format docker --rm "$ctr" "docker.io/library/$ref" >/dev/null
}

# Makes sure the base image $1 is in buildah's storage: present, pulled, or
# made here.
ensure_base() {
  local ref=$1
  if have_image "$ref"; then
    say "base $ref: present"
    return
  fi
  if timeout 120 buildah --storage-driver "$BUILDAH_DRIVER" pull --quiet "docker.io/library/$ref" >/dev/null 2>&1; then
    say "base $ref: pulled"
    return
  fi
  say "base $ref: cannot be pulled here, making it locally"
  local started=$SECONDS
  case "$ref" in
    debian:*-slim) make_debian_slim "docker.io/library/$ref" ;;
    rust:*-*) make_rust "$ref" ;;
    *) die "no recipe to make base image $ref" ;;
  esac
  MADE_BASES+=("$ref")
  figure "base image $ref made locally in $((SECONDS - started)) s ($(image_size "$ref"))"
}

# ------------------------------------------------------------------- build --

build_one() {
  local tag=$1 target=${2:-} started=$SECONDS
  say "building $tag${target:+ (--target $target)} with $ENGINE"
  case "$ENGINE" in
    docker) docker build ${target:+--target "$target"} -t "$tag" . ;;
    # --format docker keeps the HEALTHCHECK (the OCI format has none);
    # --layers caches each step as docker does.
    buildah) bah bud --layers --format docker --pull=false ${target:+--target "$target"} -t "$tag" . ;;
  esac
  figure "build $tag${target:+ (--target $target)}: $((SECONDS - started)) s with $ENGINE${BUILDAH_DRIVER:+ ($BUILDAH_DRIVER storage)}"
  figure "image size $tag: $(image_size "$tag")"
}

build() {
  if [ "$ENGINE" = buildah ]; then
    local ref
    for ref in $(external_bases); do
      ensure_base "$ref"
    done
  fi
  build_one "$IMAGE"
  build_one "$DOUBLE_IMAGE" double
  if [ "${#MADE_BASES[@]}" -gt 0 ]; then
    say "base images made locally (not pulled): ${MADE_BASES[*]}"
  fi
}

# ------------------------------------------------------------- containers --

ENVS=()

# Runs image $1 with arguments (after its ENTRYPOINT), host network, $ENVS.
run_image() {
  local image=$1
  shift
  case "$ENGINE" in
    docker) docker run --rm --network host "${ENVS[@]/#/--env=}" "$image" "$@" ;;
    buildah)
      local ctr rc=0
      ctr=$(bah from --quiet --pull=false "$image")
      mapfile -t entrypoint < <(image_config "$image" | jq -r '.Entrypoint // [] | .[]')
      bah run --network host "${ENVS[@]/#/--env=}" "$ctr" -- "${entrypoint[@]}" "$@" || rc=$?
      bah rm "$ctr" >/dev/null
      return "$rc"
      ;;
  esac
}

# Runs command $2… in image $1 instead of its ENTRYPOINT.
run_in_image() {
  local image=$1
  shift
  case "$ENGINE" in
    docker) docker run --rm --network host --entrypoint "$1" "$image" "${@:2}" ;;
    buildah)
      local ctr rc=0
      ctr=$(bah from --quiet --pull=false "$image")
      bah run --network host "$ctr" -- "$@" || rc=$?
      bah rm "$ctr" >/dev/null
      return "$rc"
      ;;
  esac
}

# An image's config (Entrypoint, Cmd, User, Healthcheck…) as JSON.
image_config() {
  case "$ENGINE" in
    docker) docker image inspect "$1" | jq '.[0].Config' ;;
    buildah) bah inspect --type image "$1" | jq '.Docker.config' ;;
  esac
}

# Starts image $1 in the background as container $2: its ENTRYPOINT and CMD,
# or its ENTRYPOINT and the arguments after $2. buildah's output goes to
# $LOGS/$2.log and the pid of its `buildah run` to BUILDAH_PIDS[$2].
start_container() {
  local image=$1 name=$2
  shift 2
  case "$ENGINE" in
    docker)
      docker run -d --name "$name" --network host "${ENVS[@]/#/--env=}" "$image" "$@" >/dev/null
      CLEANUP+=("docker rm -f $name")
      ;;
    buildah)
      local ctr
      bah rm "$name" >/dev/null 2>&1 || true # left by an interrupted run
      ctr=$(bah from --quiet --pull=false --name "$name" "$image")
      CLEANUP+=("bah rm $ctr")
      local -a command
      if [ $# -gt 0 ]; then
        mapfile -t command < <(image_config "$image" | jq -r '.Entrypoint // [] | .[]')
        command+=("$@")
      else
        mapfile -t command < <(image_config "$image" | jq -r '(.Entrypoint // []) + (.Cmd // []) | .[]')
      fi
      bah run --network host "${ENVS[@]/#/--env=}" "$ctr" -- "${command[@]}" >"$LOGS/$name.log" 2>&1 &
      BUILDAH_PIDS[$name]=$!
      # buildah run does not pass SIGTERM on: end the process inside too.
      CLEANUP+=("kill_tree ${BUILDAH_PIDS[$name]}; wait ${BUILDAH_PIDS[$name]}")
      ;;
  esac
}

# SIGTERM to pid $1 and everything under it, deepest first.
kill_tree() {
  local child
  for child in $(ps -o pid= --ppid "$1"); do
    kill_tree "$child"
  done
  kill "$1" 2>/dev/null || true
}

# The pid of the process named $2 under pid $1.
descendant_named() {
  local root=$1 name=$2 pid
  for pid in $(ps -o pid= --ppid "$root"); do
    if [ "$(ps -o comm= -p "$pid")" = "$name" ]; then
      echo "$pid"
      return 0
    fi
    descendant_named "$pid" "$name" && return 0
  done
  return 1
}

# Runs command $2… inside running container $1 (the HEALTHCHECK's way).
exec_in() {
  local name=$1
  shift
  case "$ENGINE" in
    docker) docker exec "$name" "$@" ;;
    buildah) bah run --network host "${ENVS[@]/#/--env=}" "$name" -- "$@" ;;
  esac
}

# SIGTERM to container $1's process, as `docker stop` does, waiting at most
# $2 seconds; sets STOP_STATUS to its exit status (or "timeout").
stop_container() {
  local name=$1 limit=$2
  case "$ENGINE" in
    docker)
      docker stop -t "$limit" "$name" >/dev/null
      STOP_STATUS=$(docker inspect -f '{{.State.ExitCode}}' "$name")
      ;;
    buildah)
      local runner=${BUILDAH_PIDS[$name]} pid deadline
      pid=$(descendant_named "$runner" ticketmeter) || die "no ticketmeter process under buildah run $runner"
      kill -TERM "$pid"
      deadline=$((SECONDS + limit))
      while kill -0 "$runner" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
      if kill -0 "$runner" 2>/dev/null; then
        STOP_STATUS=timeout
      else
        STOP_STATUS=0
        wait "$runner" || STOP_STATUS=$?
      fi
      ;;
  esac
}

container_log() {
  case "$ENGINE" in
    docker) docker logs "$1" 2>&1 ;;
    buildah) cat "$LOGS/$1.log" ;;
  esac
}

# ------------------------------------------------------------------- smoke --

# Seconds since $1 (a `date +%s%N` reading), to a tenth.
since() { awk -v t0="$1" -v t1="$(date +%s%N)" 'BEGIN { printf "%.1f", (t1 - t0) / 1e9 }'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# A metric's value from the collector's /metrics (0 when absent).
metric() {
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v name="$2" '$1 == name { v = $2 } END { print v + 0 }'
}

# Polls command $2… until it succeeds, for at most $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

smoke() {
  have_image "$IMAGE" || die "$IMAGE is not built (scripts/image.sh build)"
  have_image "$DOUBLE_IMAGE" || die "$DOUBLE_IMAGE is not built (scripts/image.sh build)"
  command -v jq >/dev/null 2>&1 || apt_install jq
  command -v curl >/dev/null 2>&1 || apt_install curl
  command -v tansu >/dev/null 2>&1 ||
    die "tansu is missing: scripts/test.sh installs it (cargo install tansu --locked --features dynostore,libsql)"
  declare -gA BUILDAH_PIDS=()

  local work
  work=$(mktemp -d /var/tmp/ticketmeter-smoke.XXXXXX)
  CLEANUP+=("rm -rf $work")
  LOGS=$work
  say "building the host binary (the OpenMeter double)"
  cargo build --locked --quiet --bin ticketmeter
  local host_bin
  host_bin="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/ticketmeter"

  local token=smoke-token om_port kafka_port api_port topic=smoke-events
  om_port=$(free_port)
  kafka_port=$(free_port)
  api_port=$(free_port)
  "$host_bin" double --port "$om_port" --token "$token" >"$work/double.log" 2>&1 &
  CLEANUP+=("kill $!; wait $!")
  mkdir "$work/kafka"
  (cd "$work/kafka" && exec tansu broker --storage-engine sqlite://tansu.db \
    --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port") \
    >"$work/tansu.log" 2>&1 &
  CLEANUP+=("kill $!; wait $!")
  wait_port "$om_port" || die "the double did not start: $(cat "$work/double.log")"
  wait_port "$kafka_port" || die "tansu did not start: $(cat "$work/tansu.log")"
  tansu topic create --broker "tcp://127.0.0.1:$kafka_port" --partitions 2 "$topic" >/dev/null
  tansu topic create --broker "tcp://127.0.0.1:$kafka_port" --partitions 1 "$topic.dlq" >/dev/null
  say "host services: OpenMeter double 127.0.0.1:$om_port, tansu 127.0.0.1:$kafka_port, topic $topic (2 partitions)"

  ENVS=(
    "KAFKA_BROKERS=127.0.0.1:$kafka_port"
    "KAFKA_GATEWAY_TOPIC=$topic"
    "OPENMETER_URL=http://127.0.0.1:$om_port/api/v3"
    "OPENMETER_API_KEY=$token"
    "ETH_USD_PRICE=3500"
    "PROVISION_PORT=$api_port"
    "RUST_LOG=info"
  )

  local out
  out=$(run_image "$IMAGE" --version)
  [[ $out == ticketmeter\ * ]] || die "--version printed: $out"
  figure "--version: $out"

  local uid user
  uid=$(run_in_image "$IMAGE" id -u)
  user=$(image_config "$IMAGE" | jq -r '.User')
  if [ "$uid" != 10001 ] || [ "$user" != 10001:10001 ]; then
    die "runs as uid $uid (USER $user), not 10001"
  fi
  figure "user: uid $uid (USER $user), not root"

  if run_image "$IMAGE" double --help >/dev/null 2>&1; then
    die "the production image has the double subcommand"
  fi
  figure "production image: no \`double\` subcommand (built without the feature)"

  run_image "$IMAGE" bootstrap >"$work/bootstrap.log" 2>&1 ||
    die "bootstrap failed: $(cat "$work/bootstrap.log")"
  figure "bootstrap in the container against the host's double: exit 0 ($(grep -c . "$work/bootstrap.log") lines)"

  local started
  started=$(date +%s%N)
  run_image "$IMAGE" check >"$work/check.log" 2>&1 || die "check failed: $(cat "$work/check.log")"
  figure "check: exit 0 in $(since "$started") s, $(grep -c '^✓' "$work/check.log") ✓, $(grep -c '^✗' "$work/check.log") ✗"

  # Tickets signed now for $CUSTOMERS customers, keyed by envelope id,
  # alternating between the partitions, plus one record of another event type
  # (skipped). tansu's own producer, one record per batch: Debian's kcat
  # (librdkafka 2.0) cannot talk to tansu, and a batch of many records from
  # `tansu cat produce` is read back as its first record only.
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  produce() {
    tansu cat produce --broker "tcp://127.0.0.1:$kafka_port" --partition "$1" "$topic" - >/dev/null
  }
  for ((i = 0; i < EVENTS; i++)); do
    jq -cn --arg i "$i" --arg c "$((i % CUSTOMERS))" --arg now "$now" \
      '{key: "smoke-env-\($i)",
        value: {id: "smoke-env-\($i)", type: "create_signed_ticket", timestamp: "0", gateway: "",
                data: {request_id: "smoke-req-\($i)", auth_id: "smoke-client-\($c):user-\($c)",
                       computed_fee: "1000000000000", current_time: $now, pipeline: "live"}}}' |
      produce $((i % 2))
  done
  echo '{"key": "smoke-other", "value": {"id": "smoke-other", "type": "discovery_results", "timestamp": "0", "data": {}}}' |
    produce 1
  say "produced $EVENTS tickets and 1 other event"

  started=$(date +%s%N)
  start_container "$IMAGE" ticketmeter-smoke
  delivered_all() { [ "$(metric "$api_port" ticketmeter_events_delivered_total)" -ge "$EVENTS" ]; }
  ready() { curl -fsS "http://127.0.0.1:$api_port/ready" >/dev/null 2>&1; }
  wait_for 120 delivered_all ||
    die "delivered $(metric "$api_port" ticketmeter_events_delivered_total) of $EVENTS: $(container_log ticketmeter-smoke | tail -20)"
  figure "run: $EVENTS events delivered $(since "$started") s after the container started ($(metric "$api_port" ticketmeter_events_skipped_total) skipped, $(metric "$api_port" ticketmeter_batches_total) batches)"
  wait_for 60 ready ||
    die "/ready never 200: $(curl -sS "http://127.0.0.1:$api_port/ready")"
  figure "run: /ready 200 $(since "$started") s after start"

  local check
  mapfile -t check < <(image_config "$IMAGE" | jq -r '.Healthcheck.Test[1:][]')
  exec_in ticketmeter-smoke "${check[@]}" || die "HEALTHCHECK (${check[*]}) failed while running"
  figure "HEALTHCHECK \`${check[*]}\` while running: exit 0"

  # Let a commit interval pass so the last offsets are stored, then stop.
  sleep 2
  local stopped took
  stopped=$(date +%s%N)
  stop_container ticketmeter-smoke $((SHUTDOWN_TIMEOUT_SECS + 5))
  took=$(since "$stopped")
  [ "$STOP_STATUS" = 0 ] || die "SIGTERM: exit $STOP_STATUS after $took s: $(container_log ticketmeter-smoke | tail -20)"
  awk -v t="$took" -v max="$SHUTDOWN_TIMEOUT_SECS" 'BEGIN { exit !(t <= max) }' ||
    die "SIGTERM took $took s, above SHUTDOWN_TIMEOUT"
  container_log ticketmeter-smoke | grep -q "shutting down: flushing in-flight batches" ||
    die "SIGTERM: exit 0, but not through the graceful shutdown"
  figure "SIGTERM: graceful shutdown, exit 0 after $took s (SHUTDOWN_TIMEOUT $SHUTDOWN_TIMEOUT_SECS s)"

  # Offsets committed: a new member of the same group (the host binary) owns
  # both partitions at lag 0 and reads nothing. Without committed offsets
  # it would start from the oldest record and read all of them again.
  local probe_port
  probe_port=$(free_port)
  (cd "$work" && exec env "${ENVS[@]/PROVISION_PORT=*/PROVISION_PORT=$probe_port}" RUST_LOG=warn "$host_bin" run) >"$work/probe.log" 2>&1 &
  local probe=$!
  CLEANUP+=("kill $probe; wait $probe")
  owns_both() { [ "$(curl -fsS "http://127.0.0.1:$probe_port/metrics" 2>/dev/null | grep -c '^ticketmeter_consumer_lag{')" -ge 2 ]; }
  wait_for 90 owns_both || die "the probe member never reported lag on 2 partitions: $(tail -5 "$work/probe.log")"
  sleep 3
  local lag consumed
  lag=$(curl -fsS "http://127.0.0.1:$probe_port/metrics" | awk '/^ticketmeter_consumer_lag\{/ { s += $2 } END { print s + 0 }')
  consumed=$(metric "$probe_port" ticketmeter_events_consumed_total)
  kill -TERM "$probe"
  wait "$probe" || true
  if [ "$lag" != 0 ] || [ "$consumed" != 0 ]; then
    die "after SIGTERM a new member read $consumed records, lag $lag: offsets were not committed"
  fi
  figure "offsets committed: a new group member owns both partitions at lag 0 and read $consumed records"

  local double_port
  double_port=$(free_port)
  ENVS=()
  start_container "$DOUBLE_IMAGE" ticketmeter-double-smoke double --port "$double_port"
  wait_port "$double_port" 60 || die "the double target did not listen: $(container_log ticketmeter-double-smoke | tail -5)"
  local meters
  meters=$(curl -fsS "http://127.0.0.1:$double_port/api/v3/openmeter/meters" | jq 'if type == "array" then length else (.data | length) end')
  figure "double target: \`ticketmeter double\` serves GET /api/v3/openmeter/meters (HTTP 200, $meters meters)"
  stop_container ticketmeter-double-smoke 10
  [ "$STOP_STATUS" = 0 ] || say "double target stopped with status $STOP_STATUS"

  figure "image size $IMAGE: $(image_size "$IMAGE")"
  figure "image size $DOUBLE_IMAGE: $(image_size "$DOUBLE_IMAGE")"
}

case "${1:-all}" in
  build) build ;;
  smoke) smoke ;;
  all)
    build
    smoke
    ;;
  *) die "usage: scripts/image.sh [build|smoke]" ;;
esac

say "figures ($ENGINE):"
printf '  %s\n' "${FIGURES[@]}" >&2
