#!/usr/bin/env bash
# A runnable tour of the sync API with curl: starts a throwaway server on
# 127.0.0.1:18080 with a temporary database, then creates a key, pushes,
# pulls, makes a conflict and resolves it. Needs curl and python3.
#
#   bash examples/walkthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCORD=${ACCORD:-target/release/accord}
if [ ! -x "$ACCORD" ]; then
  cargo build --release -p accord
  ACCORD="${CARGO_TARGET_DIR:-target}/release/accord"
fi
work=$(mktemp -d)
export ACCORD_DATABASE__PATH="$work/accord.db" ACCORD_SERVER__BIND=127.0.0.1:18080 ACCORD_LOG__LEVEL=warn
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
"$ACCORD" serve & server=$!
for _ in $(seq 50); do curl -sf localhost:18080/readyz >/dev/null && break; sleep 0.2; done
api() { curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@"; echo; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "== a key for alice (printed once)"
KEY=$("$ACCORD" keys create --user alice --name walkthrough 2>/dev/null)
echo "$KEY"

echo "== push a topic and its context (children first in the JSON; parents are applied first)"
api localhost:18080/api/sync/push -d '{"clientId": "laptop", "pushId": "p-1", "changes": {
  "topics":   [{"id": "t1", "version": 1, "data": {"title": "Groceries", "contextId": "c1"}}],
  "contexts": [{"id": "c1", "version": 1, "data": {"name": "Home"}}]}}'

echo "== pull everything"
page=$(api "localhost:18080/api/sync/pull?limit=1000")
echo "$page"
cursor=$(echo "$page" | json 'd["cursor"]')

echo "== two devices edit the same topic from version 1: different fields merge..."
api localhost:18080/api/sync/push -d '{"changes": {"topics": [{"id": "t1", "version": 2, "baseVersion": 1, "data": {"title": "Groceries!", "contextId": "c1"}}]}}'
api localhost:18080/api/sync/push -d '{"changes": {"topics": [{"id": "t1", "version": 2, "baseVersion": 1, "data": {"title": "Groceries", "contextId": "c1", "done": true}}]}}'

echo "== ...the same field edited differently is a conflict"
conflict=$(api localhost:18080/api/sync/push -d '{"changes": {"topics": [{"id": "t1", "version": 2, "baseVersion": 1, "data": {"title": "Shopping", "contextId": "c1"}}]}}')
echo "$conflict"
id=$(echo "$conflict" | json 'd["results"]["topics"][0]["conflictId"]')
api "localhost:18080/api/sync/conflicts?status=open"

echo "== resolve it by taking the incoming record; the resolution is a new version"
api -X POST "localhost:18080/api/sync/conflicts/$id/resolve" -d '{"take": "incoming"}'
api "localhost:18080/api/sync/pull?since=$cursor"
