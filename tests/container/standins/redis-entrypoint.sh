#!/bin/sh
# Entrypoint of the offline stand-in for the official redis image (tests/container/base-images.sh).
# Behaves like the official image's docker-entrypoint.sh for what Wharf relies on: options alone
# (`--save ""`) or a config file run redis-server; redis-server runs as the redis user in /data; and
# without a config file that sets protected-mode, protected mode is off, so other containers on
# the network can connect (the official image does the same).
set -e

# first argument an option (`--save`) or a config file: run redis-server with it
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ]; then
    protected=1
    config=
    if [ -f "${2:-}" ]; then
        config=$2
        if grep -q '^protected-mode' "$config"; then protected=; fi
    fi
    if [ -n "$protected" ]; then
        shift
        if [ -n "$config" ]; then shift; fi
        set -- --protected-mode no "$@"
        if [ -n "$config" ]; then set -- "$config" "$@"; fi
        set -- redis-server "$@"
    fi
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

um=$(umask)
if [ "$um" = 0022 ]; then umask 0077; fi

exec "$@"
