#!/usr/bin/env bash
# Receipts, answers left in the terminal, and activity, in the real Claude
# Code's terminal UI (tmux), offline against mock_mirror.py:
#   tests/claude/mirror.sh --enabled HOST_BIN
#       the channel enabled (the development flag): (a) an inject gets
#       `queued`, then `seen`, on /events, and `opzero-host send` exits 0;
#       (c) a message the model answers with text only gets `unanswered`
#       with that text; (d) a Bash call, allowed through the permission
#       relay, gets an `activity` event naming it
#   tests/claude/mirror.sh --not-enabled HOST_BIN
#       (b) the host in --mcp-config but no channel flag: an inject gets
#       `undelivered` within the grace, `POST /inject?wait=queued` answers
#       504 undelivered, and `opzero-host send` exits non-zero saying so
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh" mirror "$@"
TOOLS="$here/transcript_tools.py"
GRACE_MS=4000
printf '[mirror]\ngrace_ms = %s\n' "$GRACE_MS" > "$WORK/opzero.toml"
SERVER_CMD+=(--config "$WORK/opzero.toml")
tools() { "$PY" "$TOOLS" "$@" --timeout "$TIMEOUT" 2>>"$WORK/tools.err" || verdict FAIL "$(tail -1 "$WORK/tools.err")"; }
event() { tools event --events "$WORK/events.jsonl" "$@"; }
field() { "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"v": v}))' "$@"; }
cli() { (cd "$PROJ" && HOME="$HOME_DIR" "$HOST_BIN" "$@"); }

start_mirror_session
# Receipts need Claude's session file; the host says when it has read it.
"$PY" - "$DISC_FILE" "$TIMEOUT" "$WORK/status.json" <<'PYEOF' || verdict FAIL "the host never had receipts: $(cat "$WORK/status.json" 2>/dev/null)"
import json, sys, time, urllib.request
d, deadline = json.load(open(sys.argv[1])), time.time() + float(sys.argv[2])
while time.time() < deadline:
    req = urllib.request.Request("http://127.0.0.1:%d/status" % d["port"], headers={"X-OPZero-Secret": d["secret"]})
    status = json.load(urllib.request.urlopen(req))
    open(sys.argv[3], "w").write(json.dumps(status))
    if status.get("receipts") == "available":
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PYEOF

if [ "$HOW" = --not-enabled ]; then
  [ "$GATE" = skipped ] || verdict FAIL "expected Claude Code to skip the channel without the flag, got $GATE"
  T0=$(now)
  tools post --disc "$DISC_FILE" --path /inject --body '{"content":"is anyone there?","chat_id":"e2e-b","message_id":"b-1"}' >/dev/null
  e=$(event --type receipt --field message_id=b-1 --field state=undelivered)
  dt_b=$(dt "$T0" "$(now)")
  reason=$(field "$e" 'v["reason"]')
  case "$reason" in *--dangerously-load-development-channels*"opzero-host status"*) ;;
    *) verdict FAIL "the undelivered receipt does not say what to check: $reason";; esac
  answer=$(tools post --disc "$DISC_FILE" --path '/inject?wait=queued' --body '{"content":"still there?","chat_id":"e2e-b","message_id":"b-2"}')
  [ "$(field "$answer" 'v[0]')" = 504 ] && [ "$(field "$answer" 'v[1]["receipt"]')" = undelivered ] \
    || verdict FAIL "POST /inject?wait=queued answered $answer"
  out=$(cli send "$SESSION_ID" "hello?" --chat-id e2e-b 2>&1) && verdict FAIL "send exited 0 for a message Claude Code did not take: $out"
  case "$out" in *"Claude Code did not take this message"*) ;; *) verdict FAIL "send did not say why: $out";; esac
  verdict PASS "channel not enabled: undelivered after ${dt_b}s (grace ${GRACE_MS} ms), ?wait=queued answered 504, send failed saying why"
fi

[ "$GATE" = registered ] || verdict FAIL "channel not registered ($GATE${GATE_REASON:+: $GATE_REASON}); UI: ${UI_NOTE:-}"
# (a) queued, then seen; and send waits for queued.
T0=$(now)
tools post --disc "$DISC_FILE" --path /inject --body '{"content":"hello from the phone","chat_id":"e2e-a","message_id":"a-1"}' >/dev/null
event --type receipt --field message_id=a-1 --field state=queued >/dev/null
dt_q=$(dt "$T0" "$(now)")
event --type receipt --field message_id=a-1 --field state=seen >/dev/null
dt_s=$(dt "$T0" "$(now)")
event --type reply --field chat_id=e2e-a >/dev/null
out=$(cli send "$SESSION_ID" "and from the cli" --chat-id e2e-a2 2>&1) || verdict FAIL "send failed: $out"
case "$out" in *"Claude Code has it"*) ;; *) verdict FAIL "send did not say Claude Code has it: $out";; esac
event --type reply --field chat_id=e2e-a2 >/dev/null
# (c) answered with text only: the phone gets that text.
tools post --disc "$DISC_FILE" --path /inject --body '{"content":"E2E_TEXT_ONLY what is the plan?","chat_id":"e2e-c","message_id":"c-1"}' >/dev/null
e=$(event --type unanswered --field message_id=c-1)
[ "$(field "$e" 'v["text"]')" = "answered in the terminal: E2E_TEXT_ONLY what is the plan?" ] \
  || verdict FAIL "the unanswered event does not carry the terminal's text: $e"
[ "$(field "$e" 'v["chat_id"]')" = e2e-c ] || verdict FAIL "unanswered for the wrong chat: $e"
# (d) a Bash call, allowed through the relay: the phone sees it.
tools post --disc "$DISC_FILE" --path /inject \
  --body '{"content":"please run E2E_BASH=echo hi > e2e-bash.txt && cat e2e-bash.txt","chat_id":"e2e-d","message_id":"d-1"}' >/dev/null
"$PY" "$TOOLS" allow --events "$WORK/events.jsonl" --disc "$DISC_FILE" --tool Bash --timeout "$TIMEOUT" \
  >"$WORK/allow.out" 2>>"$WORK/tools.err" || verdict FAIL "the Bash permission prompt was not relayed: $(tail -1 "$WORK/tools.err")"
e=$(event --type activity --field tool=Bash)
[ "$(field "$e" 'v["summary"]')" = "e2e bash step" ] || verdict FAIL "the activity event does not say what Bash does: $e"
event --type reply --field chat_id=e2e-d >/dev/null
# Nothing was called undelivered, and the answered ones were not unanswered.
bad=$("$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("state") == "undelivered" or (e.get("type") == "unanswered" and e.get("chat_id") != "e2e-c"):
        print(l.strip())' "$WORK/events.jsonl")
[ -z "$bad" ] || verdict FAIL "events that are not true: $bad"
verdict PASS "channel enabled: queued after ${dt_q}s, seen after ${dt_s}s; send waited for queued; unanswered carried the terminal's text; Bash showed as activity"
