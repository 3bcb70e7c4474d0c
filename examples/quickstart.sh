#!/usr/bin/env bash
# Starts a brain on a fresh data directory, then uses the API as a new user would:
# create a project, a user with a role in it, and an agent with its enrollment token.
# Usage: examples/quickstart.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-7711}
dir=$(mktemp -d)
# The release binary the README builds (`cargo run --release -p taskward-brain`), in cargo's
# target directory wherever that is (CARGO_TARGET_DIR, a shared target dir): one build, reused.
cargo build -q --release -p taskward-brain
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release/taskward-brain"
"$bin" --data-dir "$dir/data" serve --listen "127.0.0.1:$port" 2>"$dir/brain.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.1; done

api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; echo; }
TOKEN=$(cat "$dir/data/admin.token")
base="http://127.0.0.1:$port/api/v1"

echo "# create project billing";       api -X POST "$base/projects" -d '{"slug": "billing"}'
echo "# create user jane";             api -X POST "$base/users" -d '{"name": "jane"}'
echo "# jane becomes an operator";     api -X POST "$base/projects/billing/members" -d '{"user": "jane", "role": "operator"}'
echo "# register an agent";            api -X POST "$base/projects/billing/agents" -d '{"name": "worker-host-1"}'
echo "# bad input names the field";    api -X POST "$base/projects" -d '{"slug": "Not OK"}'
