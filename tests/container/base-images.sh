#!/usr/bin/env bash
# Build the local base images the container test needs, offline (no registry):
#   $WHARF_CI_BASE      minbase bookworm + ca-certificates    (builder + runtime stand-in)
#   $WHARF_CI_SERVICES  the same + redis-server, nginx, socat, gettext-base, curl
# Each is made once with debootstrap + `docker import` and kept by tag, so reruns
# cost a `docker image inspect`. Bump the tag suffix to force a rebuild.
set -euo pipefail

: "${WHARF_CI_BASE:=wharf-ci/bookworm-base:v1}"
: "${WHARF_CI_SERVICES:=wharf-ci/bookworm-services:v1}"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"

log() { printf '[base-images] %s\n' "$*" >&2; }

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
    # a minimal, consistent resolver/hosts setup is provided by docker at run time
    : > "$root"/etc/hostname
}

make_image() {
    local tag=$1 include=$2 extra=${3:-}
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "$tag present (cached)"
        return 0
    fi
    need_tool
    local dir t0
    dir=$(mktemp -d /tmp/wharf-rootfs.XXXXXX)
    t0=$(date +%s)
    log "debootstrap --variant=minbase --include=$include bookworm -> $tag"
    if ! debootstrap --variant=minbase --include="$include" bookworm "$dir" "$DEBIAN_MIRROR" \
            >"$dir.log" 2>&1; then
        tail -20 "$dir.log" >&2
        rm -rf "$dir" "$dir.log"
        return 1
    fi
    if [ -n "$extra" ]; then chroot "$dir" /bin/sh -c "$extra"; fi
    trim "$dir"
    tar -C "$dir" --numeric-owner -c . \
        | docker import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$tag" >/dev/null
    rm -rf "$dir" "$dir.log"
    log "$tag built in $(( $(date +%s) - t0 ))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

make_image "$WHARF_CI_BASE" "ca-certificates"
# nginx: the stock Debian site would answer on :80 before ours; drop it.
make_image "$WHARF_CI_SERVICES" "ca-certificates,redis-server,nginx,socat,gettext-base,curl" \
    "rm -f /etc/nginx/sites-enabled/default"
