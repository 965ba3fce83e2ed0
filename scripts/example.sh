#!/usr/bin/env bash
# `make example`: builds the Examples/ service, starts a throwaway redis-server and two
# instances of the service on free loopback ports, drives them with real HTTP requests
# (curl), and checks what the example claims. Exits non-zero when a claim fails.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWIFT=${SWIFT:-swift}
HOST=127.0.0.1

for tool in curl redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "example: $tool not found (make deps installs Redis)" >&2; exit 2; }
done

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
seconds_since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }

build_start=$(now_ms)
"$SWIFT" build --package-path "$ROOT/Examples" || exit 1
BIN="$("$SWIFT" build --package-path "$ROOT/Examples" --show-bin-path)/HiredisKitExample"
echo "example: built in $(seconds_since "$build_start") s"

run_start=$(now_ms)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hiredis-kit-example.XXXXXX")
REDIS_PID=""
declare -A PID=() PORT=()

cleanup() {
  for name in "${!PID[@]}"; do kill -KILL "${PID[$name]}" 2>/dev/null; done
  [ -n "$REDIS_PID" ] && kill -KILL "$REDIS_PID" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rcli() { redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }

# A redis-server on a random free port; tries other ports when one is taken.
start_redis() {
  local attempt tick port
  for attempt in $(seq 1 10); do
    port=$(( 20000 + RANDOM % 30000 ))
    redis-server --port "$port" --bind "$HOST" --save "" --appendonly no --dir "$WORK" \
      --logfile "$WORK/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    for tick in $(seq 1 100); do
      kill -0 "$REDIS_PID" 2>/dev/null || break   # the port was taken
      # Ours, not another server on the same port.
      if redis-cli -h "$HOST" -p "$port" INFO server 2>/dev/null | grep -q "^process_id:$REDIS_PID"; then
        REDIS_PORT=$port
        return 0
      fi
      sleep 0.1
    done
    kill -KILL "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""
  done
  return 1
}

# An instance with PORT=0: it binds any free port and logs it ("listening ... port=N").
start_instance() {
  local name=$1
  INSTANCE=$name PORT=0 REDIS_URL="redis://$HOST:$REDIS_PORT" "$BIN" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
}

# Waits until the instance answers GET /health (deadline 60 s).
wait_ready() {
  local name=$1 deadline=$(( SECONDS + 60 )) port
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "${PID[$name]}" 2>/dev/null || return 1
    port=$(grep listening "$WORK/$name.log" | grep -o 'port=[0-9]*' | head -1 | cut -d= -f2)
    if [ -n "$port" ] && curl -sf --max-time 2 "http://$HOST:$port/health" >/dev/null; then
      PORT[$name]=$port
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# burst OUT COUNT AT_ONCE METHOD PATH [JSON]: COUNT requests from one curl, AT_ONCE of them in
# parallel, the odd ones to instance a and the even ones to b; "%i" in JSON is the request's
# number. Bodies go to OUT-<i>.body, the status codes (one line each) to OUT.codes.
burst() {
  local out=$1 count=$2 at_once=$3 method=$4 path=$5 data=${6:-} i name arguments=()
  for i in $(seq 1 "$count"); do
    name=$( (( i % 2 )) && echo a || echo b )
    [ "$i" -gt 1 ] && arguments+=(--next)
    arguments+=(-s --max-time 60 -w '%{http_code}\n' -X "$method" -o "$out-$i.body")
    [ -n "$data" ] && arguments+=(-H 'content-type: application/json' --data "${data//%i/$i}")
    arguments+=("http://$HOST:${PORT[$name]}$path")
  done
  curl --no-progress-meter --parallel --parallel-immediate --parallel-max "$at_once" "${arguments[@]}" >"$out.codes"
}

# How many requests of a burst OUT answered `status`.
answered() {
  grep -cx "$1" "$2.codes"
}

# The sum of a counter's samples in both instances' GET /metrics.
metric_sum() {
  local total=0 name value
  for name in a b; do
    value=$(curl -s --max-time 10 "http://$HOST:${PORT[$name]}/metrics" | awk -v m="$1" '$1 == m { s += $2 } END { print s + 0 }')
    total=$(( total + ${value%.*} ))
  done
  echo "$total"
}

passed=0
failed=0
claim() {   # claim OK DESCRIPTION FIGURES
  if [ "$1" = 1 ]; then passed=$(( passed + 1 )); echo "PASS  $2: $3"
  else failed=$(( failed + 1 )); echo "FAIL  $2: $3"; fi
}

start_redis || { echo "example: redis-server did not start" >&2; exit 1; }
start_instance a
start_instance b
for name in a b; do
  wait_ready "$name" || { echo "example: instance $name did not start"; tail -20 "$WORK/$name.log"; exit 1; }
done
echo "example: redis-server on $HOST:$REDIS_PORT; instances a on :${PORT[a]}, b on :${PORT[b]} ($(seconds_since "$run_start") s)"

# 1. 20 concurrent GET /report/same-id, split across both instances: one computation, one value.
mkdir "$WORK/report"
started=$(now_ms)
burst "$WORK/report/r" 20 20 GET /report/same-id
runs=$(rcli GET example:computations:same-id)
ok200=$(answered 200 "$WORK/report/r")
# The JSON keys come in any order: compare the values.
values=$(grep -ho '"value":[0-9]*' "$WORK"/report/r-*.body | sort -u | wc -l)
by=$(grep -ho '"computedBy":"[^"]*"' "$WORK"/report/r-*.body | cut -d'"' -f4 | sort -u | tr '\n' ' ')
ok=0; [ "$runs" = 1 ] && [ "$ok200" = 20 ] && [ "$values" = 1 ] && ok=1
claim $ok "fanout coalesces across instances" \
  "20 requests (10 per instance), $ok200 answered 200, computation ran ${runs:-0} time(s), $values distinct value(s), computed by ${by:-nobody}in $(seconds_since "$started") s"

# 2. 200 tasks POSTed across both instances: each processed exactly once.
mkdir "$WORK/tasks"
started=$(now_ms)
burst "$WORK/tasks/t" 200 25 POST /tasks '{"id":"task-%i"}'
accepted=$(answered 202 "$WORK/tasks/t")
deadline=$(( SECONDS + 60 ))
while [ "$(rcli HLEN example:processed)" -lt 200 ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
rcli HGETALL example:processed | paste - - >"$WORK/processed"
rcli HGETALL example:started | paste - - >"$WORK/started"
seq 1 200 | sed 's/^/task-/' | sort >"$WORK/expected"
processed=$(wc -l <"$WORK/processed")
once=$(awk '$2 == 1' "$WORK/processed" | cut -f1 | sort | comm -12 - "$WORK/expected" | wc -l)
started_twice=$(awk '$2 != 1' "$WORK/started" | wc -l)
split=$(rcli HGETALL example:processed-by | paste -d= - - | tr '\n' ' ')
metric=$(metric_sum example_tasks_processed_total)
ok=0; [ "$accepted" = 200 ] && [ "$processed" = 200 ] && [ "$once" = 200 ] && [ "$started_twice" = 0 ] && [ "$metric" = 200 ] && ok=1
claim $ok "every task processed exactly once" \
  "$accepted of 200 POSTs answered 202, $processed processed, $once exactly once, $started_twice started twice, by instance: ${split}(metrics: $metric) in $(seconds_since "$started") s"

# 3. 100 concurrent increments of one counter, split across both instances: no lost update.
mkdir "$WORK/counter"
started=$(now_ms)
burst "$WORK/counter/c" 100 100 POST /counter/hits/increment
ok200=$(answered 200 "$WORK/counter/c")
final=$(rcli HGET "example:counter:{hits}" value)
token=$(rcli HGET "example:counter:{hits}" token)
distinct=$(grep -ho '"value":[0-9]*' "$WORK"/counter/c-*.body | sort -u | wc -l)
ok=0; [ "$ok200" = 100 ] && [ "$final" = 100 ] && [ "$distinct" = 100 ] && ok=1
claim $ok "lock-protected increments lose no update" \
  "100 requests, $ok200 answered 200, final value ${final:-none}, $distinct distinct values seen, last fencing token ${token:-none}, in $(seconds_since "$started") s"

# 4. SIGTERM with tasks running: both instances finish them and exit 0, promptly.
mkdir "$WORK/slow"
burst "$WORK/slow/s" 4 4 POST /tasks '{"id":"slow-%i","workMilliseconds":2000}'
deadline=$(( SECONDS + 30 ))
until [ "$(rcli HMGET example:started slow-1 slow-2 slow-3 slow-4 | grep -cx 1)" = 4 ] || [ $SECONDS -ge $deadline ]; do
  sleep 0.05
done
running=$(rcli HMGET example:started slow-1 slow-2 slow-3 slow-4 | grep -cx 1)
started=$(now_ms)
kill -TERM "${PID[a]}" "${PID[b]}"
deadline=$(( SECONDS + 30 ))
while { kill -0 "${PID[a]}" || kill -0 "${PID[b]}"; } 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
stopped_in=$(seconds_since "$started")
declare -A STATUS=()
for name in a b; do
  if kill -0 "${PID[$name]}" 2>/dev/null; then STATUS[$name]="still running"
  else wait "${PID[$name]}"; STATUS[$name]=$?; unset "PID[$name]"; fi
done
finished=$(rcli HMGET example:processed slow-1 slow-2 slow-3 slow-4 | grep -cx 1)
ok=0; [ "$running" = 4 ] && [ "${STATUS[a]}" = 0 ] && [ "${STATUS[b]}" = 0 ] && [ "$finished" = 4 ] && ok=1
claim $ok "graceful shutdown on SIGTERM" \
  "$running tasks of 2 s running at SIGTERM, $finished finished; exit status a=${STATUS[a]} b=${STATUS[b]} after $stopped_in s"

if [ $failed -gt 0 ]; then
  for name in a b; do echo "--- last lines of instance $name's log"; tail -15 "$WORK/$name.log"; done
fi
echo "example: ran in $(seconds_since "$run_start") s after the build"
echo "example: $passed passed, $failed failed"
[ $failed -eq 0 ]
