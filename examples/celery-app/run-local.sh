#!/usr/bin/env bash
# Runs the whole thing locally, the way the README's first section does: a brain (SQLite) that
# prints the `taskward-agent run` line, that line run as printed (an agent with the Celery
# engine), and two real Celery workers of examples/celery-app; then sends a few tasks and
# shows what the brain recorded. Ctrl-C stops everything.
# Needs: Redis on 127.0.0.1:6379 (or a broker URL given), python3 with venv; the example's
# Celery comes from its own venv (setup.sh, run here when it is missing).
# Usage: examples/celery-app/run-local.sh [BROKER_URL] [PORT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
broker=${1:-redis://127.0.0.1:6379/5}
port=${2:-7712}
python="$here/.venv/bin/python"
[ -x "$python" ] || "$here/setup.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "logs were in $dir"
}
trap cleanup EXIT

# The release binaries the README builds, from cargo's target directory (CARGO_TARGET_DIR
# honoured): built once, shared with the README's commands. Built one package at a time as the
# README does: building both at once unifies their dependencies' features differently, which
# would cost a second full build.
echo "building brain and agent (release)"
cargo build -q --release --manifest-path "$root/Cargo.toml" -p taskward-brain
cargo build -q --release --manifest-path "$root/Cargo.toml" -p taskward-agent
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release"

# Command one: the brain. Its first start prints the agent's line (with this broker in it).
setsid "$bin/taskward-brain" --data-dir "$dir/brain" serve --listen "127.0.0.1:$port" \
    --agent-broker "$broker" 2>"$dir/brain.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$dir/brain/admin.token")
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
base="http://127.0.0.1:$port/api/v1"

# Command two: the printed line, as printed, with the release agent first on the PATH.
line=$(grep -m1 '^taskward-agent run ' "$dir/brain.log")
echo "running the line the brain printed: taskward-agent run --brain … --enroll … --broker $broker"
PATH="$bin:$PATH" TASKWARD_AGENT_CONFIG="$dir/agent/agent.toml" \
    setsid sh -c "exec $line" 2>"$dir/agent.log" & pids+=($!)

cd "$root/examples/celery-app"
for name in alpha beta; do
    CELERY_BROKER_URL="$broker" setsid "$python" -m celery -A app worker -E -n "$name@%h" \
        --pool prefork -c 2 --without-mingle --without-gossip >"$dir/worker-$name.log" 2>&1 &
    pids+=($!)
done
sleep 5
echo "sending tasks"
CELERY_BROKER_URL="$broker" "$python" -c '
import app
app.add.delay(2, 3); app.fail.delay(); app.flaky.delay(); app.spawn.delay(3)
app.login.delay("ann", password="hunter2", email="ann@example.com")
app.sleepy.delay(2)'
sleep 6
echo "# workers";    api "$base/projects/default/agents" ; echo
agent=$(api "$base/projects/default/agents" |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["id"])')
echo "# rate limit of app.add on every worker (the README's example)"
command=$(api -X POST "$base/projects/default/commands/rate-limit" \
    -d "{\"agent_id\": \"$agent\", \"task_name\": \"app.add\", \"rate\": \"10/m\"}")
echo "$command"
id=$(echo "$command" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# Wait for the workers' replies (a few seconds) rather than show a command still in flight.
for _ in $(seq 1 30); do
    status=$(api "$base/projects/default/commands/$id" |
        "$python" -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    case "$status" in issued|dispatched) sleep 0.5 ;; *) break ;; esac
done
echo "# the command";   api "$base/projects/default/commands/$id" ; echo
echo "brain on http://127.0.0.1:$port (token in $dir/brain/admin.token); Ctrl-C stops"
wait
