#!/usr/bin/env bash
# Build offline stand-ins for the images docker-compose.yml and the Dockerfiles name, under the
# exact same names, so CI runs those files as written without a registry:
#
#   debian:<tag>  (ARG RUNTIME_IMAGE)  minbase bookworm + ca-certificates
#   rust:<tag>    (ARG BUILDER_IMAGE)  the same + a `cargo` that explains it is a stand-in: enough
#                                      for the builder stages when they package prebuilt binaries
#                                      (WHARF_BINARY, DEVTOOLS_BINARIES)
#   redis:<tag>   (compose `redis`)    Debian's redis-server (7.0.15, the tests' version) and
#                                      redis-cli behind an entrypoint that acts like the official one
#   nginx:<tag>   (compose `nginx`)    Debian's nginx + curl + gettext-base behind an official-style
#                                      /docker-entrypoint.sh (renders /etc/nginx/templates)
#
# The names are read from Dockerfile, dev/Dockerfile and docker-compose.yml, so a bumped tag gets
# its stand-in without editing this script. An image is only made when its name is absent, so a
# real image pulled from a registry is never replaced. Stand-ins carry the label
# org.wharf.standin=true and org.wharf.standin.recipe=<hash of this script and standins/>; a
# stand-in made by another version of them is made again. Remove them all with
# `docker image ls -q --filter label=org.wharf.standin=true | xargs docker rmi`.
# Each debootstrap takes about a minute; the three run in parallel.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STANDINS="$REPO/tests/container/standins"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
RECIPE=$(cat "${BASH_SOURCE[0]}" "$STANDINS"/* | sha256sum | cut -c1-16)
LABELS=(--change "LABEL org.wharf.standin=true" --change "LABEL org.wharf.standin.recipe=$RECIPE")

log() { printf '[base-images] %s\n' "$*" >&2; }

# arg_default FILE NAME: the default of `ARG NAME=...` in a Dockerfile
arg_default() { sed -n "s/^ARG $2=\\([^[:space:]]*\\).*/\\1/p" "$1" | head -1; }
# compose_image PREFIX: the first `image: PREFIX...` of docker-compose.yml
compose_image() { sed -n "s/^[[:space:]]*image:[[:space:]]*\\($1[^[:space:]]*\\).*/\\1/p" "$REPO/docker-compose.yml" | head -1; }

mapfile -t DEBIAN_IMAGES < <(for f in Dockerfile dev/Dockerfile; do arg_default "$REPO/$f" RUNTIME_IMAGE; done | sort -u)
mapfile -t RUST_IMAGES < <(for f in Dockerfile dev/Dockerfile; do arg_default "$REPO/$f" BUILDER_IMAGE; done | sort -u)
REDIS_IMAGE=$(compose_image 'redis:')
NGINX_IMAGE=$(compose_image 'nginx:')
for name in "${DEBIAN_IMAGES[@]}" "${RUST_IMAGES[@]}" "$REDIS_IMAGE" "$NGINX_IMAGE"; do
    case $name in
        debian:*|rust:*|redis:*|nginx:*) ;;
        *) log "cannot make a stand-in for '$name' (expected debian:, rust:, redis:, nginx: names)"; exit 1 ;;
    esac
done

label() { docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }
# usable NAME: present, and either a real image or a stand-in of this recipe
usable() {
    docker image inspect "$1" >/dev/null 2>&1 || return 1
    [ "$(label "$1" org.wharf.standin)" = true ] || return 0
    [ "$(label "$1" org.wharf.standin.recipe)" = "$RECIPE" ]
}

need_tool() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "debootstrap missing; installing it with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
}

# trim ROOTFS: drop what an image never needs (apt lists, docs, man pages, locales, caches)
trim() {
    local root=$1
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/usr/share/lintian/* "$root"/var/log/*.log \
        "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/var/tmp/*
    # docker provides hostname, hosts and resolv.conf at run time
    : > "$root"/etc/hostname
}

# debootstrap_image NAME INCLUDE SETUP-FUNCTION [--change ...]: a minbase bookworm with INCLUDE,
# customised by SETUP-FUNCTION ROOTFS, imported as NAME with the given image config.
debootstrap_image() {
    local tag=$1 include=$2 setup=$3 dir t0
    shift 3
    dir=$(mktemp -d /tmp/wharf-rootfs.XXXXXX)
    t0=$(date +%s)
    log "debootstrap --variant=minbase --include=$include bookworm -> $tag"
    if ! debootstrap --variant=minbase --include="$include" bookworm "$dir" "$DEBIAN_MIRROR" \
            >"$dir.log" 2>&1; then
        tail -20 "$dir.log" >&2
        rm -rf "$dir" "$dir.log"
        return 1
    fi
    "$setup" "$dir"
    trim "$dir"
    if ! tar -C "$dir" --numeric-owner -c . \
            | docker import "${LABELS[@]}" \
                --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                "$@" - "$tag" >/dev/null; then
        rm -rf "$dir" "$dir.log"
        return 1
    fi
    rm -rf "$dir" "$dir.log"
    log "$tag built in $(( $(date +%s) - t0 ))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

setup_debian() { :; }

setup_redis() {
    local root=$1
    # the official image runs redis-server as redis in /data
    install -m 0755 "$STANDINS/redis-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/data"
    chroot "$root" chown redis:redis /data
}

setup_nginx() {
    local root=$1
    # The official image has no site but what conf.d holds: Debian's default must not answer on :80
    rm -f "$root"/etc/nginx/sites-enabled/default
    mkdir -p "$root/docker-entrypoint.d"
    install -m 0755 "$STANDINS/nginx-entrypoint.sh" "$root/docker-entrypoint.sh"
    install -m 0755 "$STANDINS/20-envsubst-on-templates.sh" "$root/docker-entrypoint.d/20-envsubst-on-templates.sh"
    # logs to the container's output, as in the official image
    ln -sf /dev/stdout "$root/var/log/nginx/access.log"
    ln -sf /dev/stderr "$root/var/log/nginx/error.log"
}

make_debian() {
    debootstrap_image "$1" ca-certificates setup_debian --change 'CMD ["bash"]'
}

make_redis() {
    debootstrap_image "$1" ca-certificates,redis-server setup_redis \
        --change 'WORKDIR /data' --change 'VOLUME /data' --change 'EXPOSE 6379' \
        --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["redis-server"]'
}

make_nginx() {
    debootstrap_image "$1" ca-certificates,nginx,curl,gettext-base setup_nginx \
        --change 'EXPOSE 80' \
        --change 'ENTRYPOINT ["/docker-entrypoint.sh"]' --change 'CMD ["nginx", "-g", "daemon off;"]'
}

# rust:<tag> from the debian stand-in: the builder stages only use bash, find, tar and install
# when they package prebuilt binaries; a build that would compile gets a clear error instead.
make_rust() {
    local tag=$1 base=${DEBIAN_IMAGES[0]} err
    log "$tag: $base + a stand-in cargo"
    # stderr is shown on failure only: the legacy builder always prints a deprecation notice
    if ! err=$(docker build -q --label org.wharf.standin=true --label "org.wharf.standin.recipe=$RECIPE" \
            -t "$tag" - 2>&1 >/dev/null <<EOF
FROM $base
RUN printf '%s\n' '#!/bin/sh' \
    'echo "cargo: $tag here is an offline stand-in without a Rust toolchain; pass prebuilt binaries (WHARF_BINARY, DEVTOOLS_BINARIES) or use the real image" >&2' \
    'exit 1' > /usr/local/bin/cargo && chmod 0755 /usr/local/bin/cargo
EOF
    ); then
        printf '%s\n' "$err" >&2
        return 1
    fi
}

# Every missing debootstrap image in parallel, then the images made from them.
pids=() names=() replaced=()
start() { # start NAME MAKER
    if usable "$1"; then log "$1 present"; return 0; fi
    if docker image inspect "$1" >/dev/null 2>&1; then
        log "$1 is a stand-in from another recipe: making it again"
        replaced+=("$(docker image inspect -f '{{.Id}}' "$1")")
    fi
    need_tool
    "$2" "$1" & pids+=($!); names+=("$1")
}
for name in "${DEBIAN_IMAGES[@]}"; do start "$name" make_debian; done
start "$REDIS_IMAGE" make_redis
start "$NGINX_IMAGE" make_nginx
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { log "FAILED: ${names[$i]}"; status=1; }
done
[ "$status" = 0 ] || exit 1
for name in "${RUST_IMAGES[@]}"; do
    # made from the debian stand-in: made again with it
    if usable "$name" && [ "${#names[@]}" = 0 ]; then log "$name present"; continue; fi
    if [ "$(label "$name" org.wharf.standin)" = true ]; then replaced+=("$(docker image inspect -f '{{.Id}}' "$name")")
    elif docker image inspect "$name" >/dev/null 2>&1; then log "$name present"; continue; fi
    make_rust "$name"
done
# the replaced stand-ins, now untagged
for id in "${replaced[@]}"; do docker rmi "$id" >/dev/null 2>&1 || true; done
