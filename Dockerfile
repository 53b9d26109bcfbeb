# Wharf: one image for both roles.
#   docker run IMAGE            -> wharf web     (port 8000)
#   docker run IMAGE worker     -> wharf worker
#   docker run IMAGE canary --url http://...
#
# Build arguments (defaults are the production values):
#   BUILDER_IMAGE  image with the Rust toolchain          (rust:1.95.0-bookworm)
#   RUNTIME_IMAGE  Debian release the runtime files come from (debian:12.12-slim):
#                  glibc and the other libraries the binary links, the CA bundle.
#                  The final image is FROM scratch: those files, the binary, no shell.
#   WHARF_BINARY   path, inside the build context, of an already built `wharf`
#                  binary to package instead of compiling (CI: prebuilt/wharf).
#                  Empty (default) = cargo build --release --locked.
#   SOURCE_URL, VERSION, COMMIT, BUILD_URL -> /app/version.json and OCI labels.
#
# Works with the legacy builder (docker 20.10) and BuildKit alike: no `# syntax`
# line, no cache mounts. Every stage is built in order by the legacy builder, so
# every RUN here checks WHARF_BINARY itself instead of relying on stage skipping.

ARG BUILDER_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:12.12-slim

# ---------------------------------------------------------------------------
# planner: reduce the source tree to the files that decide the dependency graph
# (Cargo.toml of the workspace and of every crate, Cargo.lock). Its output only
# changes when a manifest changes, so the dependency layer below stays cached
# across source edits (checksum-based COPY --from cache, legacy builder too).
FROM ${BUILDER_IMAGE} AS planner
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN scripts/cargo-skeleton manifests /manifests

# ---------------------------------------------------------------------------
# builder: dependencies first (stub crates), then the real sources.
FROM ${BUILDER_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG WHARF_BINARY=""
WORKDIR /src
COPY --from=planner /manifests/ ./
# Stub every crate's targets so cargo can resolve and compile the dependency
# graph without our sources; the stubs are removed again in the same layer.
RUN if [ -z "$WHARF_BINARY" ]; then \
        set -eu; \
        scripts/cargo-skeleton stub > /tmp/stubs; \
        cargo build --release --locked -p wharf; \
        xargs rm -f < /tmp/stubs; \
        rm -rf target/release/.fingerprint/wharf-* target/release/deps/wharf-* target/release/deps/libwharf* /tmp/stubs; \
    fi
COPY . .
RUN set -eu; mkdir -p /out; \
    if [ -n "$WHARF_BINARY" ]; then \
        echo "packaging prebuilt binary $WHARF_BINARY"; \
        install -m 0755 "$WHARF_BINARY" /out/wharf; \
    else \
        find crates -name '*.rs' -exec touch {} +; \
        cargo build --release --locked -p wharf --bin wharf; \
        install -m 0755 target/release/wharf /out/wharf; \
    fi

# ---------------------------------------------------------------------------
# rootfs: everything the final image holds besides the binary, taken from the Debian release the
# binary is built on (RUNTIME_IMAGE; its glibc must be the builder's, both bookworm): the shared
# libraries `ldd` lists for the binary (libc, libm, libgcc_s, the dynamic loader, at the paths
# ldd gives), the CA bundle (TLS to S3, Sentry, ElastiCache), passwd/group entries for app
# (10001), nsswitch.conf, an empty /tmp and /app. A static binary lists no libraries.
FROM ${RUNTIME_IMAGE} AS rootfs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# ca-certificates is the only package added; a base that already carries it (CI's offline base)
# skips apt entirely.
# hadolint ignore=DL3008
RUN set -eu; \
    if ! dpkg -s ca-certificates > /dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=builder /out/wharf /rootfs/app/wharf
# The binary is only here to list its libraries and to run once in the assembled tree (chroot):
# the build fails if a library is missing. The final stage copies it from the builder, in a
# layer of its own, so this tree's layer stays the same from one commit to the next.
RUN set -eu; \
    r=/rootfs; \
    mkdir -p "$r/etc/ssl/certs" "$r/tmp"; \
    chmod 0755 "$r/app"; \
    chmod 1777 "$r/tmp"; \
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'app:x:10001:10001:app:/app:/sbin/nologin' > "$r/etc/passwd"; \
    printf '%s\n' 'root:x:0:' 'app:x:10001:' > "$r/etc/group"; \
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > "$r/etc/nsswitch.conf"; \
    chmod 0644 "$r/etc/passwd" "$r/etc/group" "$r/etc/nsswitch.conf"; \
    libs=$(ldd "$r/app/wharf" 2>&1 | grep -o '/[^ ]*' | grep -v "^$r/" || true); \
    if [ -z "$libs" ] && ! ldd "$r/app/wharf" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then \
        ldd "$r/app/wharf"; exit 1; \
    fi; \
    for lib in $libs; do \
        mkdir -p "$r${lib%/*}"; \
        cp -L "$lib" "$r$lib"; \
        echo "library $lib"; \
    done; \
    chroot "$r" /app/wharf --help > /dev/null; \
    rm "$r/app/wharf"

# Build metadata last, so a new commit only rebuilds these small layers.
ARG SOURCE_URL=https://github.com/wharf-dev/wharf
ARG VERSION=unknown
ARG COMMIT=unknown
ARG BUILD_URL=""
# version.json is always valid JSON: values are escaped (\ and ") and control
# characters dropped, and every field has a default.
RUN set -eu; \
    esc() { printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }; \
    mkdir -p /meta; \
    printf '{"source":"%s","version":"%s","commit":"%s","build":"%s"}\n' \
        "$(esc "$SOURCE_URL")" "$(esc "$VERSION")" "$(esc "$COMMIT")" "$(esc "$BUILD_URL")" \
        > /meta/version.json; \
    chmod 0644 /meta/version.json

# ---------------------------------------------------------------------------
# runtime: FROM scratch, no shell and no package manager: the rootfs tree, the binary and
# version.json, run as app (uid/gid 10001). Nothing may run a shell inside this image: the
# HEALTHCHECK, compose and deploy/ run `wharf` subcommands in exec form, or probe over HTTP.
FROM scratch AS runtime
COPY --from=rootfs /rootfs/ /
COPY --from=builder /out/wharf /app/wharf
COPY --from=rootfs /meta/version.json /app/version.json
ARG SOURCE_URL=https://github.com/wharf-dev/wharf
ARG VERSION=unknown
ARG COMMIT=unknown
LABEL org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="wharf" \
      org.opencontainers.image.licenses="MPL-2.0"

ENV VERSION_FILE=/app/version.json
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# `wharf check` probes http://127.0.0.1:8000/__lbheartbeat__ (no curl in the image).
# The worker role has no HTTP port: compose/ECS disable or override it there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/app/wharf", "check"]
# Exec form: wharf is PID 1 and receives SIGTERM from `docker stop` directly.
ENTRYPOINT ["/app/wharf"]
CMD ["web"]
