#!/usr/bin/env bash
# The `notify` plugin (filters/notify) in the real Claude Code's terminal UI
# (tmux), offline against mock_mirror.py, posting to a local ntfy-like
# server that records what it gets (the only place its requests may go):
#   tests/claude/notify.sh --enabled HOST_BIN
#       the channel enabled: a message from the phone that Claude answers
#       ends in one "done" notification, with the reply, once Claude Code's
#       session file says idle; a Bash call waiting for permission gives one
#       "permission" notification, then (allowed from the "phone") one more
#       "done"
#   tests/claude/notify.sh --not-enabled HOST_BIN
#       the channel not enabled: a message Claude Code never takes gives one
#       "undelivered" notification, with the reason
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh" notify "$@"
TOOLS="$here/transcript_tools.py"
COMPONENT="$ROOT/target/wasm/wasm32-wasip2/wasm/notify.wasm"
[ -f "$COMPONENT" ] || verdict FAIL "$COMPONENT is not built (cargo build-filters)"
tools() { "$PY" "$TOOLS" "$@" --timeout "$TIMEOUT" 2>>"$WORK/tools.err" || verdict FAIL "$(tail -1 "$WORK/tools.err")"; }
event() { tools event --events "$WORK/events.jsonl" "$@"; }

# The ntfy stand-in: each request as a JSON line in ntfy.jsonl.
"$PY" - "$WORK/ntfy.port" "$WORK/ntfy.jsonl" 2>"$WORK/ntfy.err" <<'PYEOF' &
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port_file, log = sys.argv[1:3]
class Record(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
PYEOF
PIDS+=($!)
wait_for_file "$WORK/ntfy.port" 5 || verdict FAIL "the ntfy stand-in did not start: $(tail -1 "$WORK/ntfy.err")"
NTFY_PORT=$(cat "$WORK/ntfy.port")
: > "$WORK/ntfy.jsonl"
printf '[mirror]\ngrace_ms = 4000\n\n[[filter]]\nname = "notify"\npath = "%s"\nhooks = ["event"]\nallowed_outbound_hosts = ["http://127.0.0.1:%s"]\n[filter.config]\nntfy_url = "http://127.0.0.1:%s/claude-e2e"\nbase_url = "https://phone.example"\n' \
  "$COMPONENT" "$NTFY_PORT" "$NTFY_PORT" > "$WORK/opzero.toml"
SERVER_CMD=(bash -c 'exec "$@" 2>>"$0"' "$WORK/host.err" "${SERVER_CMD[@]}" --config "$WORK/opzero.toml")

# notified N TITLE_END: waits for the Nth notification and checks that it
# is the only new one and that its title ends with TITLE_END; prints it.
notified() {
  "$PY" - "$WORK/ntfy.jsonl" "$1" "$2" "$TIMEOUT" "$SESSION_ID" <<'PYEOF' || verdict FAIL "notification $1 (\"$2\") did not come as expected: $(cat "$WORK/ntfy.jsonl"); host log: $(grep -i notify "$WORK/host.err" | tail -3)"
import json, sys, time
log, n, title_end, timeout, session = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
deadline = time.time() + timeout
got = []
while time.time() < deadline:
    got = [json.loads(l) for l in open(log) if l.strip()]
    if len(got) >= n:
        break
    time.sleep(0.1)
time.sleep(0.5)  # and no more than that
got = [json.loads(l) for l in open(log) if l.strip()]
if len(got) != n:
    sys.exit(f"{len(got)} notifications, wanted {n}")
r = got[-1]
b = r["body"]
assert r["path"] == "/", r
assert b["topic"] == "claude-e2e", b
assert b["title"].endswith(title_end), b
assert b["click"] == f"https://phone.example/#s={session}", b
print(json.dumps(b))
PYEOF
}

start_mirror_session

if [ "$HOW" = --not-enabled ]; then
  [ "$GATE" = skipped ] || verdict FAIL "expected Claude Code to skip the channel without the flag, got $GATE"
  tools post --disc "$DISC_FILE" --path /inject --body '{"content":"is anyone there?","chat_id":"e2e-n","message_id":"n-1"}' >/dev/null
  event --type receipt --field message_id=n-1 --field state=undelivered >/dev/null
  b=$(notified 1 ": A message did not reach Claude")
  case "$b" in *"Claude Code did not take"*) ;; *) verdict FAIL "the notification does not say why: $b";; esac
  verdict PASS "channel not enabled: one undelivered notification, with the reason"
fi

[ "$GATE" = registered ] || verdict FAIL "channel not registered ($GATE${GATE_REASON:+: $GATE_REASON}); UI: ${UI_NOTE:-}"
# A turn from the phone: answered, then Claude idle.
tools post --disc "$DISC_FILE" --path /inject --body '{"content":"hello from the phone","chat_id":"e2e-a","message_id":"a-1"}' >/dev/null
event --type reply --field chat_id=e2e-a >/dev/null
b=$(notified 1 ": Claude is done")
case "$b" in *"echo: hello from the phone"*) ;; *) verdict FAIL "the done notification does not carry the reply: $b";; esac
# A Bash call waiting for permission, allowed from the phone.
tools post --disc "$DISC_FILE" --path /inject \
  --body '{"content":"please run E2E_BASH=echo hi > e2e-bash.txt && cat e2e-bash.txt","chat_id":"e2e-b","message_id":"b-1"}' >/dev/null
event --type permission_request --field tool_name=Bash >/dev/null
b=$(notified 2 ": Claude wants to use Bash")
"$PY" "$TOOLS" allow --events "$WORK/events.jsonl" --disc "$DISC_FILE" --tool Bash --timeout "$TIMEOUT" \
  >"$WORK/allow.out" 2>>"$WORK/tools.err" || verdict FAIL "the Bash permission prompt was not answered: $(tail -1 "$WORK/tools.err")"
event --type reply --field chat_id=e2e-b >/dev/null
notified 3 ": Claude is done" >/dev/null
verdict PASS "channel enabled: a phone turn ended in one done notification with the reply; a Bash prompt in one permission notification, then one more done"
