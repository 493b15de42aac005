#!/usr/bin/env bash
# Build the server image and check it as an operator would: serve, health, create, add, search,
# metrics, SIGTERM drain, all as the unprivileged user `stilts`. Not part of the test suite (the
# build takes a long time); README "Operations" shows its output.
#
#   scripts/image-smoke.sh                      # make image, then run it with docker or podman
#   SMOKE_SKIP_BUILD=1 scripts/image-smoke.sh   # check an image built before
#
# Environment: IMAGE (default stilts:cpu), IMAGE_ARGS (passed to `make image`), SMOKE_PORT and
# SMOKE_METRICS_PORT (loopback ports, default 50071 and 9471). Where neither docker nor podman is
# installed, buildah mounts the image's root file system and the server runs in it with chroot
# as user stilts (root needed; the host's network namespace, so loopback reaches it).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-stilts:cpu}"
PORT="${SMOKE_PORT:-50071}"
MPORT="${SMOKE_METRICS_PORT:-9471}"
LOG="$(mktemp -t stilts-smoke.XXXXXX.log)"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "SMOKE FAILED: $*" >&2; [ -s "$LOG" ] && tail -40 "$LOG" >&2; exit 1; }

if [ -z "${SMOKE_SKIP_BUILD:-}" ]; then
    step "build $IMAGE"
    make image IMAGE="${IMAGE%%:*}" TARGET="${IMAGE##*:}" IMAGE_ARGS="${IMAGE_ARGS:-}"
fi

# --- how to run the image: in(): a command inside it as user stilts; start()/term()/wait_exit() --
RT=
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then RT=docker
elif command -v podman >/dev/null 2>&1; then RT=podman
fi
if [ -n "$RT" ]; then
    NAME="stilts-smoke-$$"
    cleanup() { "$RT" rm -f "$NAME" >/dev/null 2>&1 || true; }
    trap cleanup EXIT
    inimg() { "$RT" exec "$NAME" "$@"; }
    start() {
        if "$RT" container inspect "$NAME" >/dev/null 2>&1; then
            "$RT" start "$NAME" >/dev/null
        else
            "$RT" run -d --name "$NAME" -e STILTS_PORT="$PORT" -e STILTS_METRICS_PORT="$MPORT" \
                --network host "$IMAGE" >/dev/null
        fi
    }
    term() { "$RT" kill --signal TERM "$NAME" >/dev/null; }
    wait_exit() { RC="$("$RT" wait "$NAME")"; }
    logs() { "$RT" logs "$NAME" >"$LOG" 2>&1; }
elif command -v buildah >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "the buildah mode runs the image with chroot: run as root"
    CTR="$(buildah from "$IMAGE")"
    ROOT="$(buildah mount "$CTR")"
    MOUNTS=()
    for d in proc sys dev; do
        mount --bind "/$d" "$ROOT/$d" && MOUNTS+=("$ROOT/$d")
    done
    cleanup() {
        [ -n "${PID:-}" ] && kill -KILL "$PID" 2>/dev/null || true
        for m in "${MOUNTS[@]}"; do umount "$m" || true; done
        buildah umount "$CTR" >/dev/null || true
        buildah rm "$CTR" >/dev/null || true
    }
    trap cleanup EXIT
    mapfile -t ENVS < <(buildah inspect --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    WORKDIR="$(buildah inspect --format '{{.OCIv1.Config.WorkingDir}}' "$IMAGE")"
    USER_="$(buildah inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")"
    [ "$USER_" = stilts ] || fail "the image's USER is '$USER_', not stilts"
    echo "image environment: ${ENVS[*]}"
    # chroot execs env, which execs sh, which execs the command: a background start's $! is the
    # server itself, so SIGTERM reaches it as `docker stop` would
    RUNIMG=(chroot --userspec=stilts:stilts "$ROOT" /usr/bin/env -i "${ENVS[@]}"
        STILTS_PORT="$PORT" STILTS_METRICS_PORT="$MPORT" sh -c 'cd "$0" && exec "$@"' "$WORKDIR")
    inimg() { "${RUNIMG[@]}" "$@"; }
    start() { "${RUNIMG[@]}" stilts serve >"$LOG" 2>&1 & PID=$!; }
    term() { kill -TERM "$PID"; }
    wait_exit() { RC=0; wait "$PID" || RC=$?; PID=; }
    logs() { :; }
else
    fail "needs docker, podman or buildah"
fi

step "serve"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then fail "port $PORT is in use already"; fi
wait_serving() {
    for _ in $(seq 1 120); do
        if inimg stilts health --server "127.0.0.1:$PORT" --timeout 2 >/dev/null 2>&1; then return; fi
        sleep 1
    done
    logs
    fail "health never said SERVING"
}
start
wait_serving

step "health"
inimg stilts health --server "127.0.0.1:$PORT" --timeout 3

step "user"
who="$(inimg id -un)"
echo "runs as: $who"
[ "$who" = stilts ] || fail "runs as $who, not stilts"

step "create, add, search"
S=(--server "127.0.0.1:$PORT")
inimg stilts index create smoke "${S[@]}"
inimg sh -c 'printf "1\ten\tThe cat sleeps on the sofa.\n2\tde\tDer Hund bellt laut.\n3\tfr\tIl pleut beaucoup aujourd hui.\n" > /tmp/smoke.tsv'
inimg stilts index add smoke --input /tmp/smoke.tsv --quiet "${S[@]}"
inimg stilts index describe smoke "${S[@]}"
out="$(inimg stilts search --index smoke -k 1 --json "${S[@]}" "Die Katze schläft auf dem Sofa.")"
echo "$out"
grep -q '"id": 1' <<<"$out" || fail "the cat sentence is not the top hit"

step "metrics"
metrics="$(inimg python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$MPORT/metrics', timeout=5).read().decode())")"
grep -E '^stilts_requests_total' <<<"$metrics" || fail "no stilts_requests_total metrics"

step "SIGTERM drain: a search in flight is answered, then the server exits 0"
inimg sh -c 'seq 1 1000 | sed "s/.*/Query & asks where the cat sleeps in the warm afternoon sun today./" > /tmp/q.txt'
QOUT="$(mktemp -t stilts-smoke-q.XXXXXX)"
inimg stilts search --index smoke --input /tmp/q.txt -k 1 --json "${S[@]}" >"$QOUT" 2>&1 &
QPID=$!
metric() { inimg python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$MPORT/metrics', timeout=5).read().decode())"; }
inflight=
for _ in $(seq 1 100); do  # until the search is in flight
    if grep -qE '^stilts_requests_in_flight\{method="stilts.v1.RetrievalService/Search"\} [1-9]' <<<"$(metric)"; then
        inflight=1
        break
    fi
    sleep 0.05
done
[ -n "$inflight" ] || fail "the search never showed in stilts_requests_in_flight"
term
QRC=0
wait "$QPID" || QRC=$?
echo "search in flight at SIGTERM: exit $QRC, $(grep -c '"hits"' "$QOUT") of 1000 answers"
[ "$QRC" = 0 ] || { cat "$QOUT"; fail "the in-flight search failed during the drain"; }
[ "$(grep -c '"hits"' "$QOUT")" = 1000 ] || fail "the in-flight search lost answers"
wait_exit
logs
grep -E "stopping|stopped|snapshot" "$LOG" || true
[ "$RC" = 0 ] || fail "exit status $RC after SIGTERM"
grep -q "stopped" "$LOG" || fail "no 'stopped' line after SIGTERM"

step "restart: the documents are kept"
start
wait_serving
grep -q '"documents": 3' <<<"$(inimg stilts index describe smoke "${S[@]}")" || fail "documents lost"
echo "3 documents after the restart"
term
wait_exit
[ "$RC" = 0 ] || fail "exit status $RC after the second SIGTERM"
echo
echo "SMOKE OK: $IMAGE"
