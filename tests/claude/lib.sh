# shellcheck shell=bash
# What the tests in tests/claude/ share, on top of ../shared/claude-e2e's
# lib.sh, which this sources. Source it as `. lib.sh TEST --MODE HOST_BIN`:
# it sets ROOT, HOW (--MODE) and HOST_BIN, and sets up an isolated, offline
# Claude Code work dir for the host at HOST_BIN.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOW=$2
HOST_BIN="$(realpath "$3")"
LEVEL="$1/${HOW#--}"
. "$ROOT/../shared/claude-e2e/lib.sh"
locate_bins
parse_common -- "$HOST_BIN" serve
unset OPZERO_HOME OPZERO_CHANNEL_SESSION_ID CLAUDE_CODE_SESSION_ID
setup_work

# start_mock_with_files [OPTIONS]: the shared lib's start_mock, with the
# mock model API of mock_files.py (the shared one, whose reply calls can
# also carry files).
start_mock_with_files() {
  "$PY" "$ROOT/tests/claude/mock_files.py" "$HARNESS_DIR" --log "$WORK/mock.jsonl" \
    --port-file "$WORK/mock.port" --tool "$TOOL_FQ" "$@" 2>"$WORK/mock.err" &
  PIDS+=($!)
  wait_for_file "$WORK/mock.port" 5 || verdict FAIL "mock API did not start: $(tail -1 "$WORK/mock.err")"
  MOCK_PORT=$(cat "$WORK/mock.port")
  : > "$WORK/mock.jsonl"
  log "mock Anthropic API (with files) on 127.0.0.1:$MOCK_PORT (log $WORK/mock.jsonl)"
}

# echo_trip CHAT SOURCE CONTENT SEEN: CONTENT injected for CHAT reaches the
# model as SEEN in a <channel source=SOURCE> tag, and the model's `reply`,
# "echo: SEEN", reaches SSE (needs an SSE listener). Sets T0 (when it was
# sent).
echo_trip() {
  local chat=$1 source=$2 content=$3 seen=$4
  T0=$(now)
  "$PY" "$HARNESS_DIR/chan_client.py" inject --file "$DISC_FILE" --content "$content" --chat-id "$chat" \
    >"$WORK/inject.out" 2>&1 || verdict FAIL "POST /inject failed: $(cat "$WORK/inject.out")"
  "$PY" "$HARNESS_DIR/wait_for.py" mock-channel --log "$WORK/mock.jsonl" --source "$source" \
    --needle "$seen" --since "$T0" --timeout "$TIMEOUT" >/dev/null \
    || verdict FAIL "the model never saw \"$seen\" in a <channel source=\"$source\"> tag"
  "$PY" "$HARNESS_DIR/wait_for.py" sse-reply --events "$WORK/events.jsonl" --chat-id "$chat" \
    --text "echo: $seen" --since "$T0" --timeout "$TIMEOUT" >/dev/null \
    || verdict FAIL "the model's reply to \"$seen\" (a call of $TOOL_FQ) never reached /events"
}

# round_trip CHAT_ID SOURCE: an SSE subscriber, an inject, the model seeing it
# in a <channel source=SOURCE> tag, and its `reply` reaching SSE. Sets NONCE
# (in the message) and T0 (when it was sent).
round_trip() {
  local chat=$1 source=$2 content
  start_listener 0   # runs until the test ends: events after the reply count too
  wait_for_file "$WORK/sse.ready" 10 || verdict FAIL "SSE subscriber could not attach: $(tail -1 "$WORK/listener.err")"
  NONCE="$chat-$$-$RANDOM"; content="hello from $chat $NONCE"
  echo_trip "$chat" "$source" "$content" "$content"
}

# wait_status_busy_then_idle: Claude's state, from its session file, went
# busy and then idle after T0 (status events on /events).
wait_status_busy_then_idle() {
  "$PY" - "$WORK/events.jsonl" "$TIMEOUT" <<'PYEOF' || verdict FAIL "no status busy then idle event on /events after the inject: $(grep -c status "$WORK/events.jsonl" 2>/dev/null) status events"
import json, sys, time
path, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.time() + timeout
while time.time() < deadline:
    states = []
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        e = e.get("data", e) if isinstance(e, dict) else e
        if isinstance(e, dict) and e.get("type") == "status":
            states.append(e["state"])
    if "busy" in states and "idle" in states[states.index("busy"):]:
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PYEOF
}

# file_in SOURCE: an inject carrying a file (base64 JSON, as the web UI
# sends it) reaches the model as a <channel source=SOURCE> tag whose
# image_path attribute names a file holding the very bytes sent; the
# content carries no path.
file_in() {
  local source=$1 nonce="file-$$-$RANDOM" tag
  T0=$(now)
  "$PY" - "$DISC_FILE" "$nonce" "$WORK/sent.png" >"$WORK/inject-file.out" 2>&1 <<'PYEOF' || verdict FAIL "POST /inject with a file failed: $(cat "$WORK/inject-file.out")"
import base64, json, os, sys, urllib.request
disc, nonce, keep = sys.argv[1:4]
d = json.load(open(disc))
data = os.urandom(3000)
open(keep, "wb").write(data)
body = {"content": "look at this " + nonce, "chat_id": "e2e-file",
        "files": [{"name": "shot.png", "data": base64.b64encode(data).decode()}]}
req = urllib.request.Request("http://127.0.0.1:%d/inject" % d["port"], json.dumps(body).encode(),
                             {"Content-Type": "application/json", "X-OPZero-Secret": d["secret"]})
print(urllib.request.urlopen(req).read().decode())
PYEOF
  tag=$("$PY" "$HARNESS_DIR/wait_for.py" mock-channel --log "$WORK/mock.jsonl" --source "$source" \
    --needle "$nonce" --since "$T0" --timeout "$TIMEOUT") \
    || verdict FAIL "the inject with a file never reached the model in a <channel source=\"$source\"> tag"
  "$PY" - "$tag" "$WORK/sent.png" "$nonce" <<'PYEOF' || verdict FAIL "the model's <channel> tag does not name the file sent: $tag"
import json, re, sys
tag, sent, nonce = json.loads(sys.argv[1])["tag"], sys.argv[2], sys.argv[3]
m = re.search(r'\simage_path="([^"]+)"', tag)
assert m, "no image_path attribute"
assert open(m.group(1), "rb").read() == open(sent, "rb").read(), "different bytes at " + m.group(1)
inner = tag[tag.index(">") + 1:]
assert m.group(1) not in inner and nonce in inner, "the path is in the content"
PYEOF
  log "the model saw the file as image_path"
}

# file_out: the model's `reply` with files (see mock_files.py) reaches SSE
# with the file listed, and GET /files/<id> returns the very bytes sent.
# Needs round_trip's SSE subscriber.
file_out() {
  local sent="$WORK/report.bin" got
  head -c 5000 /dev/urandom > "$sent"
  T0=$(now)
  "$PY" "$HARNESS_DIR/chan_client.py" inject --file "$DISC_FILE" --content "send me E2E_FILE=$sent" \
    --chat-id e2e-file-out >"$WORK/inject.out" 2>&1 || verdict FAIL "POST /inject failed: $(cat "$WORK/inject.out")"
  got=$(file_out_check "$WORK/events.jsonl" "$DISC_FILE" "$sent" "$TIMEOUT" 2>&1) || verdict FAIL "the model's reply with a file: $got"
  log "the model's reply carried the file; GET /files/$got returned its bytes"
}

# file_out_check EVENTS DISC SENT TIMEOUT: waits for the reply with a file,
# fetches it, compares it with SENT, prints its id. (A function, so that
# the here-document is not inside a command substitution, which bash warns
# about.)
file_out_check() {
  "$PY" - "$@" <<'PYEOF'
import json, sys, time, urllib.request
events, disc, sent, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
d = json.load(open(disc))
deadline = time.time() + timeout
while True:
    replies = [e for e in map(json.loads, open(events)) if e.get("type") == "reply" and e.get("chat_id") == "e2e-file-out"]
    if replies:
        break
    if time.time() > deadline:
        sys.exit("no reply to chat e2e-file-out reached /events")
    time.sleep(0.1)
files = replies[0].get("files")
assert files and len(files) == 1 and files[0]["name"] == "report.bin", "the reply event lists %r" % files
req = urllib.request.Request("http://127.0.0.1:%d/files/%s" % (d["port"], files[0]["id"]),
                             headers={"X-OPZero-Secret": d["secret"]})
body = urllib.request.urlopen(req).read()
assert body == open(sent, "rb").read(), "GET /files/%s returned other bytes" % files[0]["id"]
assert files[0]["size"] == len(body), files
print(files[0]["id"])
PYEOF
}

# start_mirror_session: after the caller has set SERVER_CMD, Claude Code's
# terminal UI (tmux) with permission prompts relayed to the channel (the
# harbor flag), mock_mirror.py as the model, the channel enabled for
# --enabled and not for --not-enabled; then the host's discovery file, and
# an SSE listener writing $WORK/events.jsonl.
start_mirror_session() {
  register_server
  seed_config harbor
  # Claude Code 2.1.328 relays permission prompts to a channel only with this
  # GrowthBook flag on; offline nothing turns it on (see record_transcript.sh).
  "$PY" - "$HOME_DIR/.claude.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
d.setdefault("cachedGrowthBookFeatures", {})["tengu_harbor_permissions"] = True
json.dump(d, open(sys.argv[1], "w"), indent=2)
PYEOF
  "$PY" "$ROOT/tests/claude/mock_mirror.py" "$HARNESS_DIR" --log "$WORK/mock.jsonl" --port-file "$WORK/mock.port" \
    --tool "$TOOL_FQ" --reply-prefix "echo: " 2>"$WORK/mock.err" &
  PIDS+=($!)
  wait_for_file "$WORK/mock.port" 5 || verdict FAIL "mock API did not start: $(tail -1 "$WORK/mock.err")"
  MOCK_PORT=$(cat "$WORK/mock.port")

  case "$HOW" in
    --enabled) channel=(--dangerously-load-development-channels "server:$NAME");;
    --not-enabled) channel=();;
    *) verdict FAIL "usage: $0 --enabled|--not-enabled HOST_BIN";;
  esac
  start_interactive "${channel[@]}" --permission-mode default --allowedTools "$TOOL_FQ" \
    --debug-file "$WORK/claude-debug.log"
  wait_channel_gate "$TIMEOUT"
  wait_for_file "$DISC_FILE" "$TIMEOUT" || verdict FAIL "no discovery file $DISC_FILE"
  note_server_pid
  start_listener 0
  wait_for_file "$WORK/sse.ready" 10 || verdict FAIL "SSE subscriber could not attach: $(tail -1 "$WORK/listener.err")"
}
