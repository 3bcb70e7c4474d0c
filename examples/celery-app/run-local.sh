#!/usr/bin/env bash
# Runs the whole thing locally: a brain (SQLite), an agent with the Celery engine, and two
# real Celery workers of examples/celery-app on Redis; then sends a few tasks and shows what
# the brain recorded. Ctrl-C stops everything.
# Needs: Redis on 127.0.0.1:6379 and Celery in ./.venv (scripts/ensure-services makes both).
# Usage: examples/celery-app/run-local.sh [BROKER_URL] [PORT]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
broker=${1:-redis://127.0.0.1:6379/5}
port=${2:-7712}
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "no $python: run scripts/ensure-services first" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "logs were in $dir"
}
trap cleanup EXIT

echo "building brain and agent"
cargo build -q --manifest-path "$root/Cargo.toml" -p taskward-brain -p taskward-agent
bin="$root/target/debug"

setsid "$bin/taskward-brain" --data-dir "$dir/brain" serve --listen "127.0.0.1:$port" \
    2>"$dir/brain.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$dir/brain/admin.token")
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
base="http://127.0.0.1:$port/api/v1"

enroll=$(api -X POST "$base/projects/default/agents" -d '{"name": "local-host"}' \
    | "$python" -c 'import json,sys; print(json.load(sys.stdin)["enrollment_token"])')
"$bin/taskward-agent" --config "$dir/agent/agent.toml" enroll --brain "http://127.0.0.1:$port" \
    --token "$enroll" --engine celery --broker "$broker"
setsid "$bin/taskward-agent" --config "$dir/agent/agent.toml" run 2>"$dir/agent.log" & pids+=($!)

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
echo "# commands";   api "$base/projects/default/commands" ; echo
echo "brain on http://127.0.0.1:$port (token in $dir/brain/admin.token); Ctrl-C stops"
wait
