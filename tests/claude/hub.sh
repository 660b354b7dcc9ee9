#!/usr/bin/env bash
# One hub, two sessions, in the real Claude Code (issue 21): `opzero-host
# hub --port 0` runs on an OPZERO_HOME, and two sessions of one project are
# started with `opzero-host launch` in the terminal UI (tmux) on the same
# OPZERO_HOME. Then, only through the hub (its port and secret from
# hub.json):
#   - GET /sessions lists both;
#   - a page per session reads GET /s/<id>/events;
#   - POST /s/<id>/inject sends each session a text of its own;
#   - each message is in its own session's transcript (the `enqueue` line
#     and the channel `user` line, and the `reply` call), and nowhere in
#     the other's;
#   - the model (mock_hub.py) answers each with `reply`, naming the session
#     that asked; each page gets exactly its own reply event (and its
#     message's `seen` receipt), and nothing of the other session.
#   tests/claude/hub.sh HOST_BIN
# Env: CLAUDE_BIN, E2E_TIMEOUT (seconds for each wait, default 180),
# E2E_KEEP=1 (keep the work dir). Every process is ended, and the work dir
# removed, pass or fail; on a failure, what the run saw goes to stderr first.
# Offline, with ../shared/claude-e2e's mock model API and helpers.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# = 1 ] || { echo "usage: $0 HOST_BIN" >&2; exit 2; }
. "$here/lib.sh" hub --two-sessions "$1"
TIMEOUT=${E2E_TIMEOUT:-180}
[ "${E2E_KEEP:-}" = 1 ] && KEEP=1
LABELS=(a b)
declare -A SID PANE_PID TEXT NONCE TRANSCRIPT
TOP=$WORK   # the work dir (gate makes $WORK a session's own for a while)
# Said explicitly, though it is the default for this HOME: the hub and both
# hosts share it (the hosts' discovery files are in its channels/).
export OPZERO_HOME="$HOME_DIR/.opzero-claude"
DISC_DIR=.opzero-claude/channels
DISC_FILE=""   # two of them here; the shared cleanup must not pick one

# ------------------------------------------------------------- cleanup
# Processes whose environment names this run's HOME: Claude Code, the hosts,
# the hub. Whatever the shared cleanup left is ended here, by pid.
sweep() {
  local p left=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" != $$ ] && ours "$p" && left+=("$p")
  done
  [ ${#left[@]} = 0 ] && return 0
  log "still running after cleanup, ending:$(for p in "${left[@]}"; do printf ' %s (%s)' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)"
  for p in "${left[@]}"; do kill_pid "$p"; done
}

# What the run saw, on stderr, before anything is ended.
diagnose() {
  local l f
  [ -n "$WORK" ] && [ -d "$WORK" ] || return 0
  for l in "${LABELS[@]}"; do
    if [ -n "$TMUX_SOCK" ] && [ -S "$TMUX_SOCK" ]; then
      echo "--- session $l (${SID[$l]:-?}): its terminal" >&2
      tmux -S "$TMUX_SOCK" capture-pane -p -t "$l" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -25 >&2
    fi
    for f in "$WORK/$l/events.jsonl" "$WORK/$l/listener.err" "$WORK/$l/inject.out"; do
      [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
    done
    f=$(grep -E 'Channel notifications|MCP server "opzero-channel"' "$WORK/$l/claude-debug.log" 2>/dev/null | tail -5)
    [ -n "$f" ] && { echo "--- session $l: claude-debug.log (channel lines)" >&2; echo "$f" >&2; }
    if [ -n "${TRANSCRIPT[$l]:-}" ] && [ -f "${TRANSCRIPT[$l]}" ]; then
      echo "--- session $l: transcript" >&2
      "$PY" "$here/transcript_tools.py" summary "${TRANSCRIPT[$l]}" 2>&1 | tail -20 >&2
    fi
  done
  for f in "$WORK/hub.err" "$WORK/sessions.json" "$WORK/mock.err"; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
  done
  [ -s "$WORK/mock.jsonl" ] && mock_summary
}

finish() {
  cleanup
  sweep
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; elif [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}

# The shared verdict, but the work dir goes on a failure too (after
# diagnose has shown what is in it).
verdict() {
  local st=$1; shift
  VERDICT_DONE=1 WORK=$TOP
  [ "$st" = PASS ] || diagnose
  finish
  echo "$st $LEVEL: $*"
  [ "$st" = PASS ] && exit 0
  exit 1
}
trap '[ "$VERDICT_DONE" = 1 ] || { WORK=$TOP; diagnose; finish; echo "FAIL $LEVEL: interrupted"; }' EXIT

# ------------------------------------------------------------- helpers
# The shared wait_channel_gate, on one of the two sessions: it reads its
# pane through pane/keys, and its debug log from $WORK (made local here, so
# verdict and the EXIT trap set it back to $TOP).
TARGET=""
pane() { tmux -S "$TMUX_SOCK" capture-pane -p -t "$TARGET" 2>/dev/null | grep -v '^[[:space:]]*$'; }
keys() { tmux -S "$TMUX_SOCK" send-keys -t "$TARGET" "$@"; }
gate() {
  local WORK="$WORK/$1"
  TARGET=$1; CLAUDE_PID=${PANE_PID[$1]}
  wait_channel_gate "$TIMEOUT"
}

# launch LABEL: `opzero-host launch --session-id SID[LABEL]` as a person
# types it in a terminal, in tmux session LABEL (one tmux server for both).
launch() {
  local l=$1 first=0
  mkdir -p "$WORK/$l"
  claude_env_cmd
  {
    echo '#!/usr/bin/env bash'
    printf 'cd %q || exit 1\n' "$PROJ"
    echo "exec $(printf '%q ' "${CLAUDE_ENV[@]}" CLAUDE_BIN="$CLAUDE" OPZERO_HOME="$OPZERO_HOME" \
      "$HOST_BIN" launch --session-id "${SID[$l]}" -- \
      --permission-mode default --debug-file "$WORK/$l/claude-debug.log")"
  } > "$WORK/$l/claude.sh"
  if [ -z "$TMUX_SOCK" ]; then TMUX_SOCK="$WORK/tmux.sock"; first=1; fi
  tmux -S "$TMUX_SOCK" -f /dev/null new-session -d -x 200 -y 50 -s "$l" "bash $WORK/$l/claude.sh" \
    || verdict FAIL "tmux new-session for session $l failed"
  [ $first = 1 ] && PIDS+=("$(tmux -S "$TMUX_SOCK" display -p -t "$l" '#{pid}')")
  PANE_PID[$l]=$(tmux -S "$TMUX_SOCK" display -p -t "$l" '#{pane_pid}')
  PIDS+=("${PANE_PID[$l]}")
  log "session $l: launch ${SID[$l]} (claude pid ${PANE_PID[$l]}; attach: tmux -S $TMUX_SOCK attach -t $l)"
}

# listen LABEL: a page of session LABEL: GET /s/<id>/events through the hub,
# each event one JSON line {"id", "data"} in $WORK/LABEL/events.jsonl;
# $WORK/LABEL/sse.ready once the stream says it is connected.
listen() {
  local l=$1
  "$PY" - "$HUB_PORT" "$HUB_SECRET" "${SID[$l]}" "$WORK/$l/events.jsonl" "$WORK/$l/sse.ready" \
    2>"$WORK/$l/listener.err" <<'PYEOF' &
import http.client, json, sys
port, secret, sid, out, ready = sys.argv[1:6]
c = http.client.HTTPConnection("127.0.0.1", int(port))
c.request("GET", "/s/%s/events" % sid, headers={"X-OPZero-Secret": secret, "Accept": "text/event-stream"})
r = c.getresponse()
if r.status != 200:
    sys.exit("GET /s/%s/events through the hub: %d %s" % (sid, r.status, r.read()[:300]))
f, event_id = open(out, "a", buffering=1), None
while True:
    raw = r.readline()
    if not raw:
        sys.exit("GET /s/%s/events through the hub: the stream ended" % sid)
    line = raw.decode("utf-8", "replace").rstrip("\r\n")
    if line.startswith(": connected"):
        open(ready, "w").close()
    elif line.startswith("id:"):
        event_id = line[3:].strip()
    elif line.startswith("data:"):
        f.write(json.dumps({"id": event_id, "data": json.loads(line[5:])}) + "\n")
    elif line == "":
        event_id = None
PYEOF
  PIDS+=($!)
}

# inject LABEL: POST /s/<id>/inject through the hub, TEXT[LABEL] to chat
# hub-LABEL; the host's answer must be 202 {"ok":true,"message_id":…}.
inject() {
  local l=$1
  "$PY" - "$HUB_PORT" "$HUB_SECRET" "${SID[$l]}" "${TEXT[$l]}" "hub-$l" >"$WORK/$l/inject.out" 2>&1 <<'PYEOF' || verdict FAIL "POST /s/${SID[$l]}/inject through the hub: $(tail -1 "$WORK/$l/inject.out")"
import json, sys, urllib.error, urllib.request
port, secret, sid, text, chat = sys.argv[1:6]
req = urllib.request.Request("http://127.0.0.1:%s/s/%s/inject" % (port, sid),
                             json.dumps({"content": text, "chat_id": chat}).encode(),
                             {"Content-Type": "application/json", "X-OPZero-Secret": secret})
try:
    answer = urllib.request.urlopen(req, timeout=30)
except urllib.error.HTTPError as e:
    answer = e
body = answer.read().decode()
print(answer.status, body)
try:
    b = json.loads(body)
except ValueError:
    b = {}
if not (answer.status == 202 and b.get("ok") is True and b.get("message_id")):
    sys.exit("answered %d %s" % (answer.status, body))
PYEOF
}

# expected LABEL: the reply event session LABEL's page must get, minus ts.
expected() {
  local l=$1
  printf '{"type":"reply","chat_id":"hub-%s","text":"echo: %s [session %s]"}' "$l" "${TEXT[$l]}" "${SID[$l]}"
}

# ------------------------------------------------------------- the run
seed_config harbor
"$PY" "$here/mock_hub.py" "$HARNESS_DIR" --log "$WORK/mock.jsonl" --port-file "$WORK/mock.port" \
  --tool "$TOOL_FQ" --reply-prefix "echo: " 2>"$WORK/mock.err" &
PIDS+=($!)
wait_for_file "$WORK/mock.port" 10 || verdict FAIL "mock API did not start: $(tail -1 "$WORK/mock.err")"
MOCK_PORT=$(cat "$WORK/mock.port")

# The hub first, as it runs all day: the sessions come to it.
(cd "$WORK" && exec env HOME="$HOME_DIR" OPZERO_HOME="$OPZERO_HOME" "$HOST_BIN" hub --port 0) 2>"$WORK/hub.err" &
PIDS+=($!)
hub=$("$PY" - "$OPZERO_HOME/hub.json" "$TIMEOUT" <<'PYEOF'
import json, sys, time
path, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        d = json.load(open(path))
        print(d["port"], d["secret"])
        sys.exit(0)
    except (OSError, ValueError, KeyError):
        time.sleep(0.1)
sys.exit(1)
PYEOF
) || verdict FAIL "the hub wrote no $OPZERO_HOME/hub.json: $(tail -1 "$WORK/hub.err")"
read -r HUB_PORT HUB_SECRET <<<"$hub"
log "hub on 127.0.0.1:$HUB_PORT"

# Two sessions of one project, one after the other (each answers the
# development-channels warning before the next starts).
T_LAUNCH=$(now)
for l in "${LABELS[@]}"; do
  SID[$l]=$("$PY" -c 'import uuid;print(uuid.uuid4())')
  launch "$l"
  gate "$l"
  [ "$GATE" = registered ] || verdict FAIL "session $l: channel not registered ($GATE${GATE_REASON:+: $GATE_REASON}); UI: ${UI_NOTE:-}"
  disc="$OPZERO_HOME/channels/${SID[$l]}.json"
  wait_for_file "$disc" "$TIMEOUT" || verdict FAIL "session $l: no discovery file named ${SID[$l]}: $(ls "$OPZERO_HOME/channels" 2>/dev/null | tr '\n' ' ')"
  wait_for_file "$HOME_DIR/.claude/sessions/${PANE_PID[$l]}.json" "$TIMEOUT" \
    || verdict FAIL "session $l: Claude Code wrote no session file ~/.claude/sessions/${PANE_PID[$l]}.json"
  TRANSCRIPT[$l]=$("$PY" "$here/transcript_tools.py" transcript --session-file "$HOME_DIR/.claude/sessions/${PANE_PID[$l]}.json" \
    --home "$HOME_DIR" --session-id "${SID[$l]}" 2>&1) \
    || verdict FAIL "session $l: Claude Code's session file does not name session ${SID[$l]}: ${TRANSCRIPT[$l]}"
done
log "both channels registered after $(dt "$T_LAUNCH" "$(now)")s"

# The hub lists both, in this project.
"$PY" - "$HUB_PORT" "$HUB_SECRET" "$TIMEOUT" "$WORK/sessions.json" "$(realpath "$PROJ")" "${SID[a]}" "${SID[b]}" <<'PYEOF' || verdict FAIL "GET /sessions on the hub did not list both sessions in $PROJ: $(cat "$WORK/sessions.json" 2>/dev/null)"
import json, sys, time, urllib.request
port, secret, timeout, keep, proj, *want = sys.argv[1:]
deadline = time.time() + float(timeout)
while time.time() < deadline:
    req = urllib.request.Request("http://127.0.0.1:%s/sessions" % port, headers={"X-OPZero-Secret": secret})
    body = urllib.request.urlopen(req, timeout=30).read().decode()
    open(keep, "w").write(body)
    got = {s["session_id"]: s for s in json.loads(body)["sessions"]}
    if sorted(got) == sorted(want) and all(got[s]["cwd"] == proj for s in want):
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
PYEOF
log "GET /sessions lists both"

# A page per session, open before anything is sent.
for l in "${LABELS[@]}"; do
  listen "$l"
  wait_for_file "$WORK/$l/sse.ready" "$TIMEOUT" || verdict FAIL "session $l: GET /s/${SID[$l]}/events through the hub did not connect: $(tail -1 "$WORK/$l/listener.err")"
done

# Distinct texts, sent one right after the other: both sessions work at once.
for l in "${LABELS[@]}"; do
  NONCE[$l]="hub-$l-$$-$RANDOM"
  TEXT[$l]="hello session $l, this is ${NONCE[$l]}"
done
T0=$(now)
for l in "${LABELS[@]}"; do inject "$l"; done
log "injected through the hub"

# Each message is in its own session's transcript: the enqueue line and
# the channel user line, each a <channel> tag for its chat; and Claude Code
# called `reply` from that conversation.
# (A message that lands in the other transcript fails at once.)
for l in "${LABELS[@]}"; do
  o=b; [ "$l" = b ] && o=a
  out=$("$PY" - "${TRANSCRIPT[$l]}" "${TEXT[$l]}" "hub-$l" "$NAME" "$TOOL_FQ" "$(expected "$l")" "$TIMEOUT" \
    "${TRANSCRIPT[$o]}" "$o" 2>&1 <<'PYEOF'
import json, sys, time
path, text, chat, server, tool, want, timeout, other, o = sys.argv[1:10]
want = json.loads(want)
def ours(c):
    """A <channel> tag from our server, for our chat, holding our text."""
    if not isinstance(c, str) or not c.startswith('<channel source="%s"' % server) or ">" not in c:
        return False
    opening, body = c.split(">", 1)
    return ' chat_id="%s"' % chat in opening and text in body
def check(e):
    if e.get("type") == "queue-operation" and e.get("operation") == "enqueue":
        return "enqueue" if ours(e.get("content")) else None
    origin = e.get("origin") or {}
    if e.get("type") == "user" and origin.get("kind") == "channel" and origin.get("server") == server:
        return "user" if ours((e.get("message") or {}).get("content")) else None
    if e.get("type") == "assistant":
        for b in (e.get("message") or {}).get("content") or []:
            if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == tool \
                    and b.get("input") == {"chat_id": want["chat_id"], "text": want["text"]}:
                return "reply"
    return None
deadline, found = time.time() + float(timeout), set()
while time.time() < deadline:
    found = set()
    try:
        if text in open(other, encoding="utf-8").read():
            sys.exit("the message is in session %s's transcript, %s" % (o, other))
    except OSError:
        pass
    try:
        for line in open(path, encoding="utf-8"):
            try:
                found.add(check(json.loads(line)))
            except ValueError:
                pass  # a line being written
    except OSError:
        pass
    if {"enqueue", "user", "reply"} <= found:
        sys.exit(0)
    time.sleep(0.2)
sys.exit("has %s of the enqueue line, the channel user line and the reply call" % sorted(x for x in found if x))
PYEOF
) || verdict FAIL "session $l's transcript ${TRANSCRIPT[$l]}: $out"
done
dt_transcripts=$(dt "$T0" "$(now)")

# Each page gets its reply, and its message's `seen` receipt; and Claude is
# idle again after the reply (its turn is over: nothing more is coming).
for l in "${LABELS[@]}"; do
  out=$("$PY" - "$WORK/$l/events.jsonl" "hub-$l" "$TIMEOUT" 2>&1 <<'PYEOF'
import json, sys, time
path, chat, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + timeout
while time.time() < deadline:
    try:
        events = [json.loads(l)["data"] for l in open(path)]
    except (OSError, ValueError):
        events = []
    kinds = [e.get("type") for e in events]
    seen = any(e.get("type") == "receipt" and e.get("chat_id") == chat and e.get("state") == "seen" for e in events)
    if seen and "reply" in kinds and any(e.get("type") == "status" and e.get("state") == "idle"
                                         for e in events[kinds.index("reply"):]):
        sys.exit(0)
    time.sleep(0.2)
sys.exit("no reply, then status idle, and a seen receipt within %ss; it got %s" % (timeout, json.dumps(events)))
PYEOF
) || verdict FAIL "session $l's page (GET /s/${SID[$l]}/events through the hub): $out"
done
dt_replies=$(dt "$T0" "$(now)")

# Each page got exactly its own reply, and nothing that names the other
# session or its message; neither transcript holds the other's message.
for l in "${LABELS[@]}"; do
  o=b; [ "$l" = b ] && o=a
  out=$("$PY" - "$WORK/$l/events.jsonl" "$(expected "$l")" "${NONCE[$o]}" "${SID[$o]}" "hub-$o" 2>&1 <<'PYEOF'
import json, sys
path, want, *other = sys.argv[1:]
events = [json.loads(l) for l in open(path)]
replies = []
for e in events:
    d = dict(e["data"])
    if d.get("type") in ("reply", "unanswered", "edit"):
        if not isinstance(d.pop("ts", None), int):
            sys.exit("a reply event without a ts: %s" % json.dumps(e))
        replies.append(d)
if replies != [json.loads(want)]:
    sys.exit("its reply events are %s, not [%s]" % (json.dumps(replies), want))
for e in events:
    for s in other:
        if s in json.dumps(e):
            sys.exit("an event of the other session: %s" % json.dumps(e))
PYEOF
) || verdict FAIL "session $l's page (GET /s/${SID[$l]}/events through the hub): $out"
  ! grep -qF "${NONCE[$o]}" "${TRANSCRIPT[$l]}" || verdict FAIL "session $l's transcript holds session $o's message (${NONCE[$o]})"
done
verdict PASS "two sessions launched (${SID[a]:0:8}, ${SID[b]:0:8}), one hub: each message through the hub in its own transcript after ${dt_transcripts}s, each page got only its own reply after ${dt_replies}s"
