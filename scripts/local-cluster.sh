#!/usr/bin/env bash
# A five-node Shoal cluster on this machine (seed 001's picture): a throwaway PostgreSQL
# journal, three `entity` nodes hosting the entities and two `endpoint` nodes serving HTTP
# through a shard region proxy, all on loopback.
#
#   scripts/local-cluster.sh [start] [APP] [--for SECONDS]   # APP: artifact-state (default)
#                                                             #      or shopping-cart
#   scripts/local-cluster.sh stop                             # from another terminal
#
# `start` builds once (`cargo build --release -p artifact-state -p shopping-cart`), starts
# PostgreSQL (initdb/pg_ctl from `pg_config --bindir`, as the `postgres` user when run as
# root) in a temporary directory on a free port, starts the five nodes, waits until all are
# Up (management `/cluster/members`), prints the URLs and curl examples, then runs until
# Ctrl-C, SIGTERM, `scripts/local-cluster.sh stop` or the end of `--for SECONDS`. Stopping
# sends SIGTERM to every node (each hands its shards off and leaves), waits for them, stops
# PostgreSQL and removes the temporary directory.
#
# Environment:
#   SHOAL_LOCAL_CLUSTER_BIN    run this binary instead of building (e.g. a debug build)
#   SHOAL_LOCAL_CLUSTER_STATE  where the running cluster is recorded, for `stop`
#                              (default ${TMPDIR:-/tmp}/shoal-local-cluster-UID.state)
#   SHOAL_LOCAL_CLUSTER_KEEP   1: keep the temporary directory (logs, data) after stopping
#   CARGO_TARGET_DIR           where cargo builds (default: target/ in the repository)
#   RUST_LOG                   the nodes' log filter (default info; logs go to files)
# Ports (the first free one at or above each is used):
#   cluster 2551.., management 8558.., HTTP 8080.. (shopping-cart) or 8082.. (artifact-state),
#   PostgreSQL 15432..

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SHOAL_LOCAL_CLUSTER_STATE:-${TMPDIR:-/tmp}/shoal-local-cluster-$(id -u).state}"
START_DEADLINE=120   # seconds for the nodes to print their start lines and all be Up
STOP_DEADLINE=60     # seconds for the nodes to leave after SIGTERM (then SIGKILL)

say() { printf '%s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

# --- stop ------------------------------------------------------------------------------

# `stop`: ask the running script to stop (its trap does the work); if it is gone, clean up
# what it recorded.
stop_command() {
    [[ -f "$STATE" ]] || die "no local cluster is recorded in $STATE"
    local script_pid="" work=""
    # shellcheck disable=SC1090
    source "$STATE"
    if [[ -n "$script_pid" ]] && kill -0 "$script_pid" 2>/dev/null; then
        say "stopping the local cluster (script pid $script_pid)"
        kill -TERM "$script_pid"
        # Done when the script has removed its record (it does so last) or is gone (an
        # exited script whose parent has not reaped it yet still answers `kill -0`).
        local waited=0
        while [[ -f "$STATE" ]] && kill -0 "$script_pid" 2>/dev/null; do
            if (( waited >= (STOP_DEADLINE + 30) * 10 )); then
                die "the script (pid $script_pid) did not stop"
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        say "stopped"
    else
        say "the script is gone; cleaning up what it left in $work"
        WORK="$work"
        NODE_PIDS=()
        if [[ -f "$work/node-pids" ]]; then
            read -r -a NODE_PIDS <"$work/node-pids" || true
        fi
        PG_DATA="$work/pg/data"
        PG_BIN="$(pg_config --bindir)"
        cleanup
        # The script that wrote it is gone: a later `stop` must not clean up again.
        rm -f "$STATE"
    fi
}

# --- helpers ---------------------------------------------------------------------------

# Whether something listens on 127.0.0.1:$1.
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

TAKEN=" "
PORT=""
# Sets PORT to the first port at or above $1 that nothing listens on and this script has not
# handed out yet (not in a subshell: it remembers what it handed out).
free_port() {
    local port=$1
    while [[ "$TAKEN" == *" $port "* ]] || listening "$port"; do
        port=$((port + 1))
        (( port < 65535 )) || die "no free port above $1"
    done
    TAKEN+="$port "
    PORT=$port
}

# Runs a PostgreSQL tool, as the `postgres` user when we are root.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# --- cleanup ---------------------------------------------------------------------------

CLEANED=0
cleanup() {
    (( CLEANED == 0 )) || return 0
    CLEANED=1
    trap '' INT TERM
    local pid live=()
    for pid in "${NODE_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            live+=("$pid")
        fi
    done
    if (( ${#live[@]} > 0 )); then
        say "stopping ${#live[@]} nodes (SIGTERM: each hands its shards off and leaves)"
        local waited=0
        while :; do
            local still=()
            for pid in "${live[@]}"; do
                kill -0 "$pid" 2>/dev/null && still+=("$pid")
            done
            (( ${#still[@]} == 0 )) && break
            if (( waited >= STOP_DEADLINE * 10 )); then
                say "nodes ${still[*]} did not stop within ${STOP_DEADLINE}s: SIGKILL"
                kill -KILL "${still[@]}" 2>/dev/null || true
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        # Reap our own children (no-op for processes we did not start in this shell).
        wait "${live[@]}" 2>/dev/null || true
    fi
    if [[ -n "${PG_DATA:-}" && -f "$PG_DATA/postmaster.pid" ]]; then
        say "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
        if [[ "${SHOAL_LOCAL_CLUSTER_KEEP:-0}" == 1 ]]; then
            say "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    if [[ -f "$STATE" ]] && grep -q "^script_pid=$$\$" "$STATE" 2>/dev/null; then
        rm -f "$STATE"
    fi
    say "stopped"
}

# --- start -----------------------------------------------------------------------------

start_command() {
    local app="artifact-state" lifetime=""
    while (( $# > 0 )); do
        case "$1" in
            artifact-state | shopping-cart) app="$1" ;;
            --for)
                [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--for needs a number of seconds"
                lifetime="$2"
                shift
                ;;
            -h | --help) usage ;;
            *) die "unknown argument '$1' (apps: artifact-state, shopping-cart)" ;;
        esac
        shift
    done
    command -v curl >/dev/null || die "curl is needed (to ask the nodes' management HTTP)"
    command -v setsid >/dev/null || die "setsid (util-linux) is needed"
    if [[ -f "$STATE" ]]; then
        local script_pid=""
        # shellcheck disable=SC1090
        source "$STATE"
        if [[ -n "$script_pid" ]] && kill -0 "$script_pid" 2>/dev/null; then
            die "a local cluster is already running (pid $script_pid): scripts/local-cluster.sh stop"
        fi
        rm -f "$STATE"
    fi

    # The binary: built once, in release mode, unless given.
    local bin
    if [[ -n "${SHOAL_LOCAL_CLUSTER_BIN:-}" ]]; then
        bin="$SHOAL_LOCAL_CLUSTER_BIN"
    else
        say "building (cargo build --release -p artifact-state -p shopping-cart)"
        (cd "$ROOT" && cargo build --release -p artifact-state -p shopping-cart)
        local target="${CARGO_TARGET_DIR:-$ROOT/target}"
        [[ "$target" == /* ]] || target="$ROOT/$target"
        bin="$target/release/$app"
    fi
    [[ -x "$bin" ]] || die "no executable $bin"

    # Everything after this point is undone by cleanup.
    NODE_PIDS=()
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/shoal-local-cluster.XXXXXX")"
    chmod 755 "$WORK"
    trap 'cleanup; exit 0' INT TERM
    trap 'cleanup' EXIT
    printf 'script_pid=%s\nwork=%s\n' "$$" "$WORK" >"$STATE"

    # PostgreSQL, throwaway.
    command -v pg_config >/dev/null || die "pg_config not found: install PostgreSQL (apt-get install postgresql)"
    PG_BIN="$(pg_config --bindir)"
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || die "no initdb/pg_ctl in $PG_BIN"
    mkdir -p "$WORK/pg"
    [[ $(id -u) -eq 0 ]] && chown postgres "$WORK/pg"
    PG_DATA="$WORK/pg/data"
    local pg_port
    free_port 15432
    pg_port=$PORT
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    # Its own session: a Ctrl-C in the terminal reaches this script only, which stops the
    # nodes before the database they write to.
    local as_postgres=()
    [[ $(id -u) -eq 0 ]] && as_postgres=(runuser -u postgres --)
    setsid -w "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" \
        -l "$WORK/pg/postgres.log" -w -t 60 \
        -o "-p $pg_port -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null \
        || { cat "$WORK/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
    local store="postgres://postgres@127.0.0.1:$pg_port/postgres"
    say "PostgreSQL  $store"

    # Ports: three entity nodes, then two endpoint nodes.
    local http_base=8082
    [[ "$app" == shopping-cart ]] && http_base=8080
    local i cluster=() management=() http=()
    for i in 0 1 2 3 4; do
        free_port 2551
        cluster[i]=$PORT
        free_port 8558
        management[i]=$PORT
    done
    free_port "$http_base"
    http[3]=$PORT
    free_port "$http_base"
    http[4]=$PORT
    local seeds="127.0.0.1:${cluster[0]},127.0.0.1:${cluster[1]},127.0.0.1:${cluster[2]}"

    local secret
    secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    mkdir -p "$WORK/logs"
    for i in 0 1 2 3 4; do
        local args=(--cluster "127.0.0.1:${cluster[i]}" --seed "$seeds"
            --management "127.0.0.1:${management[i]}" --store "$store")
        if (( i < 3 )); then
            args+=(--role entity)
        else
            args+=(--role endpoint --http "127.0.0.1:${http[i]}")
        fi
        # Its own session (see PostgreSQL above); the secret goes through the environment.
        SHOAL_CLUSTER_SECRET="$secret" RUST_LOG="${RUST_LOG:-info}" \
            setsid "$bin" "${args[@]}" \
            </dev/null >"$WORK/logs/node-$((i + 1)).out" 2>"$WORK/logs/node-$((i + 1)).log" &
        NODE_PIDS+=("$!")
    done
    printf '%s\n' "${NODE_PIDS[*]}" >"$WORK/node-pids"

    # Wait (bounded) for every node's start line, then for all five Up in every node's view.
    local deadline=$((SECONDS + START_DEADLINE))
    for i in 0 1 2 3 4; do
        until grep -qx started "$WORK/logs/node-$((i + 1)).out" 2>/dev/null; do
            if ! kill -0 "${NODE_PIDS[i]}" 2>/dev/null; then
                tail -n 30 "$WORK/logs/node-$((i + 1)).log" >&2
                die "node $((i + 1)) exited at start (log above)"
            fi
            (( SECONDS < deadline )) || die "node $((i + 1)) did not start within ${START_DEADLINE}s"
            sleep 0.1
        done
    done
    for i in 0 1 2 3 4; do
        local members=""
        while :; do
            members="$(curl -s --max-time 5 "http://127.0.0.1:${management[i]}/cluster/members" || true)"
            local up
            up="$( (grep -o '"status":"Up"' <<<"$members" || true) | wc -l)"
            if (( up == 5 )) && [[ "$members" == *'"converged":true'* ]]; then
                break
            fi
            (( SECONDS < deadline )) \
                || die "node $((i + 1)) does not see 5 members Up within ${START_DEADLINE}s: $members"
            sleep 0.2
        done
    done

    say ""
    say "local $app cluster: 5 nodes Up"
    for i in 0 1 2 3 4; do
        local role=entity
        (( i >= 3 )) && role=endpoint
        local line
        line="$(printf 'node %d  %-8s  pid %-7s cluster 127.0.0.1:%-5s  management http://127.0.0.1:%s' \
            $((i + 1)) "$role" "${NODE_PIDS[i]}" "${cluster[i]}" "${management[i]}")"
        (( i >= 3 )) && line+="  http http://127.0.0.1:${http[i]}"
        say "$line"
    done
    say "logs        $WORK/logs"
    say ""
    say "try:"
    say "  curl -s http://127.0.0.1:${management[0]}/cluster/members"
    local e1="http://127.0.0.1:${http[3]}" e2="http://127.0.0.1:${http[4]}"
    if [[ "$app" == shopping-cart ]]; then
        say "  curl -s -X POST $e1/carts/c1/items -H 'content-type: application/json' -d '{\"itemId\":\"sku-1\",\"quantity\":2}'"
        say "  curl -s $e2/carts/c1"
        say "  curl -s -X POST '$e2/cart?id=apple&quantity=3'"
        say "  curl -s $e1/cart"
    else
        say "  curl -s -d '{\"artifactId\":1, \"userId\":\"Michael\"}' -H 'Content-Type: application/json' -X POST $e1/artifactState/setArtifactReadByUser"
        say "  curl -s -d '{\"artifactId\":1, \"userId\":\"Michael\"}' -H 'Content-Type: application/json' -X POST $e2/artifactState/isArtifactReadByUser"
        say "  curl -s '$e2/artifactState/getAllStates?artifactId=1&userId=Michael'"
    fi
    if [[ -n "$lifetime" ]]; then
        say "stopping in ${lifetime}s (or Ctrl-C, or scripts/local-cluster.sh stop)"
    else
        say "Ctrl-C or scripts/local-cluster.sh stop to stop everything"
    fi

    # Run until a signal (the trap), the lifetime's end, or every node gone. A node that
    # exits on its own is reported once.
    local started_at=$SECONDS reported=" "
    while :; do
        if [[ -n "$lifetime" ]] && (( SECONDS - started_at >= lifetime )); then
            break
        fi
        local alive=0
        for i in 0 1 2 3 4; do
            if kill -0 "${NODE_PIDS[i]}" 2>/dev/null; then
                alive=$((alive + 1))
            elif [[ "$reported" != *" $i "* ]]; then
                say "node $((i + 1)) (pid ${NODE_PIDS[i]}) exited; its log: $WORK/logs/node-$((i + 1)).log"
                reported+="$i "
            fi
        done
        (( alive > 0 )) || break
        # `wait` on a background sleep returns as soon as a signal arrives.
        sleep 1 &
        wait $! || true
    done
    cleanup
}

case "${1:-start}" in
    stop) stop_command ;;
    start) shift || true; start_command "$@" ;;
    -h | --help | help) usage ;;
    *) start_command "$@" ;;
esac
