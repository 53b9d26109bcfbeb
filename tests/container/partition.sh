#!/usr/bin/env bash
# Partition test: a worker is cut off from Redis (`docker network disconnect`) while it holds a
# batch, cannot acknowledge it, loses the entries to another worker, and is reconnected. Nothing
# may be lost. What happens to the batch it holds depends on the docId ledger
# (DEDUP_WINDOW_MS; docs/worker.md, "Partitions"):
#
#   PARTITION_DEDUP=on (default, the shipped settings): the worker records each document in the
#     ledger in Redis before its PutObject, so while cut off it writes nothing. After the
#     partition heals its batch is checked against the ledger and dropped (the other worker's
#     object holds the documents): no duplicate line in S3, `wharf.worker.dedup.dropped` = N.
#   PARTITION_DEDUP=off (DEDUP_WINDOW_MS=0 for both workers): it writes its batch to S3 while cut
#     off, the other worker writes the documents again, and every duplicate line in S3 must be
#     counted by `wharf.worker.entries.lost_lease`.
#
#   bash tests/container/partition.sh      (tests/container/run.sh runs it on the images it built)
#
# Wharf's own containers on two private bridge networks:
#   redis-net  redis, web (port published on 127.0.0.1), worker A (fixed address), worker B
#   s3-net     s3-standin, statsd-sink, worker A, worker B
# so cutting worker A off redis-net leaves it S3 and StatsD. Each step waits for something it
# can observe (Redis, the S3 store's files, logs), with a deadline, never for a fixed time:
#   1. worker A alone; N documents posted; A reads them all (pending for A in the group)
#   2. A disconnected from redis-net before its batch is due; its TCP connections to Redis fail
#   3. on:  A's batch comes due and A logs that it could not consult the docId ledger; no object
#           in S3 holds any of its N docIds, and its N entries are still pending for it
#      off: A's PutObject lands (the object is in S3) while its N entries are still pending for
#           it: "written, not acknowledged"; A's acknowledgement keeps failing (it retries)
#   4. M more documents arrive; nobody reads them (A cannot). Once A's entries have been idle
#      WORKER_CLAIM_IDLE_MS, worker B starts (on: A has still written nothing): it takes them
#      over (XAUTOCLAIM) and reads the M, and writes all N + M in one batch of its own, a
#      different object from A's
#   5. every entry acknowledged and deleted (XLEN 0, nothing pending) while A is still cut off
#   6. A reconnected at its old address (the partition heals). on: the ledger answers, names
#      B's object for A's N documents, and A drops them (log type `worker.dedup`, dropped = N).
#      Both modes: A's acknowledgement goes through and finds the entries gone; it counts them
#      as lost_lease
#   7. B stopped: A alone lands new documents, so it recovered without a restart
# Then: every docId is in S3; B's claimed count is N; A's lost_lease is N (StatsD, and A's log).
#   on:  no duplicate line; A's N docIds each once; `wharf.worker.dedup.dropped` (StatsD) and
#        A's log both say N dropped, = lost_lease
#   off: duplicate lines (lines - distinct docIds) are A's N documents, each twice; that equals
#        lost_lease
# PutObject and XACK are milliseconds apart, so the cut comes just before A's batch is due; with
# S3 reachable that gives the same state, checked in step 3: written, not acknowledged (off), or
# held and not written (on).
#
# PARTITION_RECONNECT=new-address reconnects A at another address instead (as after a DHCP
# renewal, or a NAT or firewall that silently dropped the connections): A must then reconnect to
# Redis by itself (TCP keepalive, a new connection after a timeout). run.sh runs it twice:
# same-address with PARTITION_DEDUP=on, new-address with PARTITION_DEDUP=off; see
# docs/worker.md, "Partitions".
#
# Inputs (all optional): WHARF_CI_IMAGE, WHARF_CI_DEVTOOLS_IMAGE (the images run.sh builds),
# WHARF_CI_RUN (label value, so that run.sh's cleanup finds these containers too),
# PARTITION_DOCS (N, default 40), PARTITION_RECONNECT (same-address | new-address),
# PARTITION_DEDUP (on | off).
# Everything it creates is removed on exit, failure included.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1
IMAGE=${WHARF_CI_IMAGE:-wharf-ci/wharf:test}
DEVTOOLS_IMAGE=${WHARF_CI_DEVTOOLS_IMAGE:-wharf-ci/wharf-devtools:test}
REDIS_IMAGE=$(sed -n 's/^[[:space:]]*image:[[:space:]]*\(redis:[^[:space:]]*\).*/\1/p' docker-compose.yml | head -1)
LABEL="wharf-ci-run=${WHARF_CI_RUN:-wharfpart$$}"
P="wharfpart$$"
REDIS_NET="$P-redis-net"
S3_NET="$P-s3-net"
N=${PARTITION_DOCS:-40}
M=10
RECONNECT=${PARTITION_RECONNECT:-same-address}
DEDUP=${PARTITION_DEDUP:-on}
NS=partition
DOC_PATH="$NS/cut/1"
# wharf-settings requires WORKER_CLAIM_IDLE_MS > 3 x REDIS_TIMEOUT_MS and >= 3 x the poll
# interval. A's batch is due BATCH_MAX_AGE_MS after its first document, before anyone may claim
# its entries (WORKER_CLAIM_IDLE_MS after their delivery or last renewal): A's PutObject happens
# while the entries are still A's.
AGE_MS=2500
CLAIM_IDLE_MS=4000
WORKER_ENV=(-e REDIS_HOST=redis -e REDIS_TIMEOUT_MS=500 -e WORKER_POLL_INTERVAL_MS=500
    -e "WORKER_CLAIM_IDLE_MS=$CLAIM_IDLE_MS" -e "BATCH_MAX_AGE_MS=$AGE_MS"
    -e S3_BUCKET=wharf -e S3_ENDPOINT_URL=http://s3:9000 -e AWS_REGION=us-east-1
    -e AWS_ACCESS_KEY_ID=wharf -e AWS_SECRET_ACCESS_KEY=wharf-secret
    -e STATSD_HOST=statsd -e STATSD_PORT=8125 -e ENVIRONMENT=ci -e LOG_FORMAT=json)
# on: the shipped default (DEDUP_WINDOW_MS unset, 3600000); off: the docId ledger disabled
case $DEDUP in
    on) ;;
    off) WORKER_ENV+=(-e DEDUP_WINDOW_MS=0) ;;
    *) echo "PARTITION_DEDUP must be on or off, not '$DEDUP'" >&2; exit 2 ;;
esac
case $RECONNECT in
    same-address|new-address) ;;
    *) echo "PARTITION_RECONNECT must be same-address or new-address, not '$RECONNECT'" >&2; exit 2 ;;
esac
FAILED=0
T0=$(date +%s.%N)

say() { printf '[partition] %s\n' "$*"; }
now() { date +%s.%N; }
between() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }  # between T1 T2: seconds
since() { between "$1" "$(now)"; }
ok() { say "PASS $*"; }
bad() { FAILED=$((FAILED + 1)); say "FAIL $*"; }
fatal() { bad "$*"; dump; exit 1; }
check() { # check DESCRIPTION TEST-ARGS...
    local what=$1
    shift
    if [ "$@" ]; then ok "$what"; else bad "$what"; fi
}

cleanup() {
    set +e
    local ids
    ids=$(docker ps -aq --filter "label=$LABEL" --filter "name=$P-")
    [ -n "$ids" ] && echo "$ids" | xargs docker rm -f -v >/dev/null 2>&1
    docker network rm "$REDIS_NET" "$S3_NET" >/dev/null 2>&1
    rm -f "/tmp/$P-landed.txt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dump() { # the workers' logs and the queue, to explain a failure
    local c
    for c in worker-a worker-b; do
        docker inspect "$P-$c" >/dev/null 2>&1 || continue
        say "--- docker logs $P-$c (last 30 lines)"
        docker logs "$P-$c" 2>&1 | tail -30 | cut -c1-400 | sed 's/^/[partition]   | /'
    done
    say "--- queue (Σ XLEN, Σ pending, pending for worker A): $(queue_state worker-a- 2>&1)"
}

wait_for() { # wait_for SECONDS CMD... : retry CMD until it succeeds
    local deadline
    deadline=$(awk -v n="$(now)" -v s="$1" 'BEGIN { printf "%.3f", n + s }')
    shift
    until "$@" >/dev/null 2>&1; do
        awk -v n="$(now)" -v d="$deadline" 'BEGIN { exit !(n >= d) }' && return 1
        sleep 0.1
    done
}

rcli() { docker exec "$P-redis" redis-cli "$@"; }
# queue_state PREFIX [IDLE-MS]: "Σ XLEN, Σ pending, pending for consumers named PREFIX*, and of
# those the ones idle at least IDLE-MS (by the Redis clock)", over shards 0..3 and every
# registered shard, in one round trip
QUEUE_STATE_LUA='
local shards = redis.call("SMEMBERS", "wharf:queue:shards")
for i = 0, 3 do shards[#shards + 1] = tostring(i) end
local seen, len, pending, mine, idle = {}, 0, 0, 0, 0
local prefix, min_idle = ARGV[1], tonumber(ARGV[2])
local function ours(name) return prefix ~= "" and string.sub(name, 1, #prefix) == prefix end
for _, s in ipairs(shards) do
    local key = "wharf:{" .. s .. "}:submissions"
    if not seen[s] and redis.call("EXISTS", key) == 1 then
        seen[s] = true
        len = len + redis.call("XLEN", key)
        local consumers = redis.pcall("XINFO", "CONSUMERS", key, "wharf-workers")
        if type(consumers) == "table" and not consumers.err then
            for _, c in ipairs(consumers) do
                local name, n = "", 0
                for j = 1, #c, 2 do
                    if c[j] == "name" then name = c[j + 1] elseif c[j] == "pending" then n = c[j + 1] end
                end
                pending = pending + n
                if ours(name) then mine = mine + n end
            end
            local old = redis.pcall("XPENDING", key, "wharf-workers", "IDLE", min_idle, "-", "+", 100000)
            if type(old) == "table" and not old.err then
                for _, e in ipairs(old) do
                    if ours(e[2]) then idle = idle + 1 end
                end
            end
        end
    end
end
return {len, pending, mine, idle}'
queue_state() { rcli EVAL "$QUEUE_STATE_LUA" 0 "${1:-}" "${2:-0}" | tr '\n' ' '; }
held_by() { # held_by PREFIX COUNT: exactly COUNT entries pending for PREFIX*
    local len pending mine idle
    read -r len pending mine idle <<<"$(queue_state "$1")"
    [ "${mine:-x}" = "$2" ]
}
idle_for() { # idle_for PREFIX COUNT MS: COUNT entries pending for PREFIX*, all idle >= MS
    local len pending mine idle
    read -r len pending mine idle <<<"$(queue_state "$1" "$3")"
    [ "${mine:-x}" = "$2" ] && [ "$idle" = "$2" ]
}
queue_empty() {
    local len pending mine idle
    read -r len pending mine idle <<<"$(queue_state "")"
    [ "${len:-x}" = 0 ] && [ "${pending:-x}" = 0 ]
}
live() { rcli ZRANGEBYSCORE wharf:workers:live "$(($(date +%s) * 1000))" +inf | grep -q "^$1"; }
s3_objects() { docker exec "$P-s3" find /data -path "*/$DOC_PATH/*" -name '*.ndjson.gz' | grep -c . ; }
s3_objects_at_least() { [ "$(s3_objects)" -ge "$1" ]; }
in_log() { docker logs "$1" 2>&1 | grep -qF "$2"; }
# TCP from worker A's network namespace: the wharf image has no shell, so the probe runs in a
# devtools container joined to A's network (--network container:)
reaches_redis() {
    docker run --rm --label "$LABEL" --name "$P-probe" --network "container:$P-worker-a" "$DEVTOOLS_IMAGE" \
        timeout 2 bash -c "exec 3<>/dev/tcp/$REDIS_IP/6379"
}
# landed_ids: the docId of every line in S3 under $NS/, one a line, sorted (`wharf landed
# --decode` prints each document's uri); the listing itself goes to /tmp/$P-landed.txt
landed_ids() {
    docker run --rm --network "$S3_NET" "${WORKER_ENV[@]}" "$IMAGE" landed --prefix "$NS/" --decode --limit 1000 \
        >"/tmp/$P-landed.txt" 2>&1 || { say "wharf landed failed: $(tail -3 "/tmp/$P-landed.txt")" >&2; return 1; }
    { grep -oE "uri: /submit/$DOC_PATH/[0-9a-f-]+" "/tmp/$P-landed.txt" || true; } | sed 's#.*/##' | sort
}
# MozLog JSON, one event a line: fields KEY... prints those Fields of each event read on stdin;
# logged_sum CONTAINER TYPE KEY sums Fields.KEY over the container's events of that Type
fields() { python3 -c '
import json, sys
keys = sys.argv[1:]
for line in sys.stdin:
    try:
        f = json.loads(line)["Fields"]
    except (ValueError, KeyError):
        continue
    print(*(f[k] for k in keys))' "$@"; }
logged_sum() { docker logs "$1" 2>&1 | python3 -c '
import json, sys
kind, key, total = sys.argv[1], sys.argv[2], 0
for line in sys.stdin:
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if isinstance(event, dict) and event.get("Type") == kind:
        total += int(event.get("Fields", {}).get(key) or 0)
print(total)' "$2" "$3"; }
logged_sum_is() { [ "$(logged_sum "$1" "$2" "$3")" = "$4" ]; }

POSTED=()
post() { # post COUNT: COUNT new documents through web in one curl (--next); records their ids
    local i id args=() codes
    for ((i = 0; i < $1; i++)); do
        id=$(cat /proc/sys/kernel/random/uuid)
        POSTED+=("$id")
        args+=(-sS -X POST -o /dev/null -w '%{http_code}\n' --data-binary "{\"partition\":\"$id\"}"
            "http://127.0.0.1:$WEB_PORT/submit/$DOC_PATH/$id")
        [ "$i" -lt $(($1 - 1)) ] && args+=(--next)
    done
    codes=$(curl "${args[@]}")
    [ "$(grep -c '^200$' <<<"$codes")" -eq "$1" ] || { say "web answered: $(sort <<<"$codes" | uniq -c | tr '\n' ' ')"; return 1; }
}

worker() { # worker NAME [--ip ADDRESS]: a worker on both networks; consumer names NAME-1-...
    local name=$1
    shift
    docker create --label "$LABEL" --name "$P-$name" --hostname "$name" --network "$REDIS_NET" "$@" \
        "${WORKER_ENV[@]}" "$IMAGE" worker >/dev/null &&
        docker network connect "$S3_NET" "$P-$name" &&
        docker start "$P-$name" >/dev/null
}

# ------------------------------------------------------------------ set-up
# redis-net gets a subnet of its own choosing so that worker A can keep its address (--ip needs a
# user-configured subnet); docker refuses one that overlaps an existing network, so try a few.
for _ in 1 2 3 4 5 6 7 8; do
    SUBNET="10.213.$((RANDOM % 256)).0/24"
    docker network create --label "$LABEL" --subnet "$SUBNET" "$REDIS_NET" >/dev/null 2>&1 && break
    SUBNET=""
done
[ -n "$SUBNET" ] || fatal "docker network create $REDIS_NET: no free 10.213.x.0/24"
A_IP=${SUBNET%.0/24}.10
A_NEW_IP=${SUBNET%.0/24}.11
docker network create --label "$LABEL" "$S3_NET" >/dev/null || fatal "docker network create $S3_NET"
RUN=(docker run -d --label "$LABEL")
"${RUN[@]}" --name "$P-redis" --network "$REDIS_NET" --network-alias redis "$REDIS_IMAGE" \
    redis-server --save "" --appendonly no >/dev/null || fatal "redis container"
"${RUN[@]}" --name "$P-s3" --network "$S3_NET" --network-alias s3 "$DEVTOOLS_IMAGE" \
    s3-standin --root /data --host 0.0.0.0 --port 9000 --access-key wharf --secret-key wharf-secret \
    --bucket wharf >/dev/null || fatal "s3-standin container"
"${RUN[@]}" --name "$P-statsd" --network "$S3_NET" --network-alias statsd "$DEVTOOLS_IMAGE" \
    statsd-sink --host 0.0.0.0 --port 8125 >/dev/null || fatal "statsd-sink container"
"${RUN[@]}" --name "$P-web" --network "$REDIS_NET" -p 127.0.0.1::8000 \
    -e REDIS_HOST=redis -e ENVIRONMENT=ci "$IMAGE" web >/dev/null || fatal "web container"
WEB_PORT=$(docker port "$P-web" 8000/tcp | head -1 | sed 's/.*://')
REDIS_IP=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$REDIS_NET\").IPAddress}}" "$P-redis")
wait_for 20 rcli ping || fatal "redis did not answer"
wait_for 20 docker exec "$P-s3" s3-standin --healthcheck --port 9000 || fatal "s3-standin did not answer"
wait_for 30 curl -fsS "http://127.0.0.1:$WEB_PORT/__lbheartbeat__" || fatal "web did not answer"
worker worker-a --ip "$A_IP" || fatal "worker A container"
wait_for 30 live worker-a- || fatal "worker A did not register its liveness record"
A_NAME=$(rcli ZRANGE wharf:workers:live 0 -1 | grep '^worker-a-')
say "up in $(since "$T0")s: redis $REDIS_IP, web 127.0.0.1:$WEB_PORT, worker A $A_NAME at $A_IP;" \
    "BATCH_MAX_AGE_MS=$AGE_MS WORKER_CLAIM_IDLE_MS=$CLAIM_IDLE_MS REDIS_TIMEOUT_MS=500"

# ------------------------------------------------------------------ 1. A holds N documents
T_SCENARIO=$(now)
post "$N" || fatal "posting $N documents"
wait_for 10 held_by worker-a- "$N" || fatal "1. worker A did not read the $N documents"
T_READ=$(now)
ok "1. worker A holds all $N documents (pending for it in wharf-workers)"

# ------------------------------------------------------------------ 2. cut A off Redis
docker network disconnect "$REDIS_NET" "$P-worker-a" || fatal "docker network disconnect"
T_CUT=$(now)
[ "$(s3_objects)" = 0 ] || fatal "2. worker A wrote its batch before it was cut off ($(between "$T_READ" "$T_CUT")s after reading: machine too slow for BATCH_MAX_AGE_MS=$AGE_MS)"
reaches_redis 2>/dev/null && fatal "2. worker A still reaches Redis at $REDIS_IP:6379 after the disconnect"
ok "2. worker A cut off from redis-net $(between "$T_READ" "$T_CUT")s after reading (no TCP to $REDIS_IP:6379), S3 still reachable"

if [ "$DEDUP" = on ]; then
    # ------------------------------------------------------------------ 3. no ledger, no PutObject
    # The ledger is consulted when the batch is due, and only then written: wait for A's report
    # that it could not consult it (or for an object, which would be A's), then look in S3.
    a_refused() { in_log "$P-worker-a" "could not consult the docId ledger" || s3_objects_at_least 1; }
    wait_for 15 a_refused
    T_PUT=$(now)
    a_ids=$(landed_ids) || fatal "3. could not list S3"
    a_written=$(comm -12 <(printf '%s\n' "${POSTED[@]:0:N}" | sort) <(uniq <<<"$a_ids") | grep -c .)
    [ "$a_written" = 0 ] || fatal "3. worker A wrote its batch while cut off from Redis: $a_written of its $N docIds are in S3 ($(s3_objects) object(s)) $(between "$T_CUT" "$T_PUT")s after the cut"
    in_log "$P-worker-a" "could not consult the docId ledger" \
        || fatal "3. worker A has not reported the docId ledger unreachable $(between "$T_CUT" "$T_PUT")s after the cut (its batch was due ${AGE_MS} ms after it read)"
    held_by worker-a- "$N" || fatal "3. A's entries are not pending for it: $(queue_state worker-a-)"
    ok "3. A's batch came due; $(between "$T_CUT" "$T_PUT")s after the cut A logged that it could not consult the docId ledger; no object in S3 holds any of its $N docIds; its $N entries are still pending for it in Redis"
else
    # ------------------------------------------------------------------ 3. PutObject, no ack
    wait_for 15 s3_objects_at_least 1 || fatal "3. worker A's batch never reached S3"
    held_by worker-a- "$N" || fatal "3. A's object is in S3 but its entries are not pending for it: $(queue_state worker-a-)"
    T_PUT=$(now)
    ok "3. A's PutObject landed $(between "$T_CUT" "$T_PUT")s after the cut; its $N entries are still pending for it in Redis"
    wait_for 10 in_log "$P-worker-a" "batch written but not yet acknowledged" \
        && say "   A logs: batch written but not yet acknowledged; retrying"
fi

# ------------------------------------------------------------------ 4. B takes A's entries over
post "$M" || fatal "posting $M documents during the partition"
wait_for 15 idle_for worker-a- "$N" "$CLAIM_IDLE_MS" || fatal "4. A's entries never became idle for ${CLAIM_IDLE_MS} ms"
if [ "$DEDUP" = on ] && [ "$(s3_objects)" != 0 ]; then
    fatal "4. worker A wrote to S3 while cut off ($(s3_objects) object(s) $(since "$T_CUT")s after the cut, before B started)"
fi
worker worker-b || fatal "worker B container"
wait_for 30 held_by worker-a- 0 || fatal "4. worker B did not take A's entries over"
T_CLAIMED=$(now)
ok "4. worker B took A's $N entries over $(between "$T_CUT" "$T_CLAIMED")s after the cut (and read the $M posted meanwhile)"

# ------------------------------------------------------------------ 5. everything acknowledged
wait_for 30 queue_empty || fatal "5. entries left in Redis"
T_EMPTY=$(now)
ok "5. every entry acknowledged and deleted while A is still cut off (Σ XLEN 0, nothing pending; $(s3_objects) object(s) in S3)"

# ------------------------------------------------------------------ 6. reconnect A
if [ "$RECONNECT" = new-address ]; then A_BACK_IP=$A_NEW_IP; else A_BACK_IP=$A_IP; fi
docker network connect --ip "$A_BACK_IP" "$REDIS_NET" "$P-worker-a" || fatal "docker network connect"
T_BACK=$(now)
wait_for 10 reaches_redis || fatal "6. worker A cannot reach Redis after docker network connect"
if [ "$DEDUP" = on ]; then
    # the ledger names B's object for every one of A's documents: A drops them all, writes nothing
    if wait_for 30 logged_sum_is "$P-worker-a" worker.dedup dropped "$N"; then
        T_DROPPED=$(now)
        ok "6. A reconnected at $A_BACK_IP; $(between "$T_BACK" "$T_DROPPED")s later the docId ledger answered it, naming B's object: A dropped all $N documents of its batch (log type worker.dedup, dropped $N)"
    else
        fatal "6. worker A, reconnected at $A_BACK_IP, has not dropped its $N documents $(since "$T_BACK")s later (its worker.dedup logs say dropped $(logged_sum "$P-worker-a" worker.dedup dropped))"
    fi
fi
if wait_for 30 in_log "$P-worker-a" "were no longer this worker's"; then
    ok "6. A reconnected at $A_BACK_IP; $(since "$T_BACK")s later its late acknowledgement found the entries gone"
else
    fatal "6. worker A, reconnected at $A_BACK_IP, has not acknowledged anything $(since "$T_BACK")s later (its own TCP to Redis works)"
fi

# ------------------------------------------------------------------ 7. A works alone
docker stop -t 10 "$P-worker-b" >/dev/null
post 5 || fatal "posting after the reconnect"
if wait_for 30 queue_empty; then
    ok "7. B stopped; A alone landed 5 new documents (restarts: $(docker inspect -f '{{.RestartCount}}' "$P-worker-a"), running: $(docker inspect -f '{{.State.Running}}' "$P-worker-a"))"
else
    bad "7. worker A did not land new documents after the reconnect: $(queue_state "")"
fi
T_END=$(now)

# ------------------------------------------------------------------ the accounting
# S3: every line's docId
lines=$(landed_ids) || bad "wharf landed failed"
total_lines=$(grep -c . <<<"$lines")
distinct=$(uniq <<<"$lines" | grep -c .)
dups=$((total_lines - distinct))
missing=$(comm -23 <(printf '%s\n' "${POSTED[@]}" | sort -u) <(uniq <<<"$lines") | grep -c .)
# A's N docIds by how many lines in S3 hold them
copies_of_a() { comm -12 <(printf '%s\n' "${POSTED[@]:0:N}" | sort) <(uniq -c <<<"$lines" | awk -v n="$1" '$1 == n { print $2 }') | grep -c .; }
twice_a=$(copies_of_a 2)
once_a=$(copies_of_a 1)
objects=$(grep -cE '\.ndjson\.gz$' "/tmp/$P-landed.txt")

# logs: A's report of its late acknowledgement, B's claims, the documents each dropped
read -r a_documents a_acked <<<"$(docker logs "$P-worker-a" 2>&1 | grep -F "were no longer this worker's" \
    | fields documents acked | awk '{ d += $1; a += $2 } END { print d + 0, a + 0 }')"
b_claimed=$(docker logs "$P-worker-b" 2>&1 | grep -F "took over entries left idle" | fields entries | awk '{ s += $1 } END { print s + 0 }')
a_dropped=$(logged_sum "$P-worker-a" worker.dedup dropped)
b_dropped=$(logged_sum "$P-worker-b" worker.dedup dropped)
# StatsD: each counter summed over both workers (the sink prints name:value|c|#tags). Metrics
# reach the sink up to 500 ms late: wait until they agree with the logs and Redis.
counter() { docker logs "$P-statsd" 2>/dev/null | awk -F'[:|]' -v m="wharf.$1" '$1 == m && $3 == "c" { s += $2 } END { print s + 0 }'; }
counters_settled() {
    [ "$(counter worker.entries.lost_lease)" = $((a_documents - a_acked)) ] &&
        [ "$(counter worker.entries.acked)" = "$distinct" ] && [ "$(counter worker.entries.claimed)" = "$b_claimed" ] &&
        [ "$(counter worker.dedup.dropped)" = $((a_dropped + b_dropped)) ]
}
wait_for 5 counters_settled
lost=$(counter worker.entries.lost_lease)
claimed=$(counter worker.entries.claimed)
acked=$(counter worker.entries.acked)
dropped=$(counter worker.dedup.dropped)

say "measured (PARTITION_DEDUP=$DEDUP, PARTITION_RECONNECT=$RECONNECT): N=$N (+$M during the partition, +5 after)," \
    "documents posted ${#POSTED[@]}, objects $objects, lines in S3 $total_lines, distinct docIds $distinct, duplicate lines $dups"
say "  StatsD: worker.entries.lost_lease $lost, worker.entries.claimed $claimed, worker.entries.acked $acked," \
    "worker.dedup.dropped $dropped"
say "  logs: A's late acknowledgement: $a_acked of $a_documents entries acknowledged; B took over $b_claimed;" \
    "worker.dedup dropped: A $a_dropped, B $b_dropped"
if [ "$DEDUP" = on ]; then
    say "  times: cut $(between "$T_READ" "$T_CUT")s after A read; A reports the ledger unreachable +$(between "$T_CUT" "$T_PUT")s;" \
        "B's takeover +$(between "$T_CUT" "$T_CLAIMED")s; queue empty +$(between "$T_CUT" "$T_EMPTY")s;" \
        "reconnect +$(between "$T_CUT" "$T_BACK")s; A's batch dropped +$(between "$T_CUT" "$T_DROPPED")s;" \
        "scenario $(between "$T_SCENARIO" "$T_END")s; total $(since "$T0")s"
else
    say "  times: cut $(between "$T_READ" "$T_CUT")s after A read; A's object in S3 +$(between "$T_CUT" "$T_PUT")s;" \
        "B's takeover +$(between "$T_CUT" "$T_CLAIMED")s; reconnect +$(between "$T_CUT" "$T_BACK")s;" \
        "scenario $(between "$T_SCENARIO" "$T_END")s; total $(since "$T0")s"
fi

check "nothing lost: all ${#POSTED[@]} docIds are in S3 ($missing missing)" "$missing" = 0
if [ "$DEDUP" = on ]; then
    check "no duplicate line in S3 ($dups duplicate lines, $total_lines lines for $distinct docIds)" "$dups" = 0
    check "A's $N documents are in S3 exactly once each ($once_a of them)" "$once_a" = "$N"
    check "A dropped its $N documents: StatsD wharf.worker.dedup.dropped $dropped, A's worker.dedup log $a_dropped, B's $b_dropped" \
        "$dropped/$a_dropped/$b_dropped" = "$N/$N/0"
    check "wharf.worker.entries.lost_lease ($lost) = documents dropped ($dropped): none written twice" "$lost" = "$dropped"
else
    check "the partition duplicated documents in S3 ($dups duplicate lines)" "$dups" -gt 0
    check "duplicate lines in S3 ($dups) = wharf.worker.entries.lost_lease ($lost)" "$dups" = "$lost"
    check "the duplicates are A's $N documents, each exactly twice ($twice_a of them)" "$twice_a/$dups" = "$N/$N"
fi
check "A's log: its late acknowledgement of $a_documents entries acknowledged $a_acked (want $N and 0)" \
    "$a_documents/$a_acked" = "$N/0"
check "B took over A's $N entries (StatsD worker.entries.claimed $claimed, B's log $b_claimed)" \
    "$claimed/$b_claimed" = "$N/$N"
if [ "$DEDUP" = on ]; then
    check "worker.entries.acked ($acked) = distinct documents ($distinct) = lines in S3 ($total_lines): acked + lost_lease = lines + dropped ($((total_lines + dropped)))" \
        "$acked/$acked/$((acked + lost))" = "$distinct/$total_lines/$((total_lines + dropped))"
else
    check "worker.entries.acked ($acked) = distinct documents ($distinct): acked + lost_lease = lines in S3 ($total_lines)" \
        "$acked/$((acked + lost))" = "$distinct/$total_lines"
fi
[ "$FAILED" = 0 ] || dump
[ "$FAILED" = 0 ]
