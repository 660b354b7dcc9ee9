#!/usr/bin/env bash
# Records what the real Claude Code writes to its transcript and session
# file while the host at HOST_BIN is its channel, as fixtures for the host's
# transcript reader: one fresh terminal-UI session per scenario (tmux, the
# development-channels flag, the host as a user MCP server run with
# --config /dev/null and `--session-id` as `opzero-host launch` gives it),
# driven through POST /inject, offline against mock_mirror.py. Each
# scenario's transcript is copied verbatim, once Claude is idle and the
# file has stopped growing, to OUT (default host/testdata/claude-2.1.328/)
# as SCENARIO.jsonl, with Claude's session file as SCENARIO.session-*.json.
#   tests/claude/record_transcript.sh HOST_BIN [SCENARIO...]   (default: all)
# Scenarios:
#   roundtrip   a message answered with `reply`
#   busy        a message sent while the first one's turn is held at the
#               model (mock --gate-file); session file copied idle and busy
#   text-only   a message answered with text only (E2E_TEXT_ONLY)
#   bash        the model calls Bash with a command that writes a file
#               (E2E_BASH=echo hi > e2e-bash.txt && cat e2e-bash.txt), not
#               pre-allowed: the permission prompt is answered through the
#               host's relay (permission_request on /events, POST /permission),
#               with the flag tengu_harbor_permissions seeded (see below)
#   bash-readonly  the model calls Bash (E2E_BASH=echo hi), which Claude Code
#               allows by itself as read-only: no prompt
#   twice       two injects of the same text, back to back, while idle
#   busy-two    two messages sent while the first one's turn is held
#   escape      content and meta with </channel>, quotes, &, <, a newline,
#               a tab and non-ASCII characters; a meta key with a leading digit
#   headless    claude -p stream-json, the host as a --plugin-dir plugin
#               and channel_enable: does it write ~/.claude/sessions/<pid>.json?
#               (saved as headless.session-*.json, none if there is none)
# Env: CLAUDE_BIN (as ../shared/claude-e2e), OUT, RECORD_KEEP=1 (keep the
# work dirs: mock.jsonl, events.jsonl, claude-debug.log). Each scenario ends with a
# PASS/FAIL line of its own; the script fails if any scenario did.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL="roundtrip busy text-only bash bash-readonly twice busy-two escape headless"

if [ "${1:-}" != --one ]; then
  [ $# -ge 1 ] || { sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2; }
  host_bin=$(realpath "$1"); shift
  out=$(realpath -m "${OUT:-$here/../../host/testdata/claude-2.1.328}")
  mkdir -p "$out"
  failed=()
  for scenario in ${*:-$ALL}; do
    bash "$0" --one "$scenario" "$host_bin" "$out" || failed+=("$scenario")
  done
  [ ${#failed[@]} = 0 ] || { echo "FAIL record: ${failed[*]}"; exit 1; }
  echo "PASS record: transcripts in $out"
  exit 0
fi

SCENARIO=$2
OUT=$4
. "$here/lib.sh" record "--$SCENARIO" "$3"
TOOLS="$here/transcript_tools.py"
SERVER_CMD+=(--config /dev/null)   # the defaults, wherever this runs from
[ -n "${RECORD_KEEP:-}" ] && KEEP=1   # keep each scenario's work dir

# The shared lib's start_mock, with mock_mirror.py. The mock holds tool
# calls until $WORK/gate exists: it does, but in the scenarios that hold.
start_mock_mirror() {
  "$PY" "$here/mock_mirror.py" "$HARNESS_DIR" --log "$WORK/mock.jsonl" --port-file "$WORK/mock.port" \
    --tool "$TOOL_FQ" --reply-prefix "echo: " --gate-file "$WORK/gate" --gate-timeout 60 \
    2>"$WORK/mock.err" &
  PIDS+=($!)
  wait_for_file "$WORK/mock.port" 5 || verdict FAIL "mock API did not start: $(tail -1 "$WORK/mock.err")"
  MOCK_PORT=$(cat "$WORK/mock.port")
  : > "$WORK/mock.jsonl"
}

# relay_permissions: plant the GrowthBook cache entry
# tengu_harbor_permissions=true. Claude Code 2.1.328 relays a permission
# prompt to a channel (notifications/claude/channel/permission_request) only
# with that flag on (read from the binary: the relay is set up only when
# b("tengu_harbor_permissions", false)); offline there is no GrowthBook answer.
relay_permissions() {
  "$PY" - "$HOME_DIR/.claude.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
d.setdefault("cachedGrowthBookFeatures", {})["tengu_harbor_permissions"] = True
json.dump(d, open(sys.argv[1], "w"), indent=2)
PYEOF
}

# tui_session [CLAUDE_ARGS...]: Claude Code's terminal UI with the host as
# its channel, the channel registered, an SSE subscriber on /events. Sets
# SESSION_FILE and TRANSCRIPT.
tui_session() {
  register_server
  seed_config harbor
  [ "$SCENARIO" = bash ] && relay_permissions
  start_mock_mirror
  start_interactive --dangerously-load-development-channels "server:$NAME" --session-id "$SESSION_ID" \
    --permission-mode default --allowedTools "$TOOL_FQ" "$@" --debug-file "$WORK/claude-debug.log"
  wait_channel_gate "$TIMEOUT"
  [ "$GATE" = registered ] || verdict FAIL "channel not registered ($GATE${GATE_REASON:+: $GATE_REASON})"
  wait_for_file "$DISC_FILE" "$TIMEOUT" || verdict FAIL "no discovery file $DISC_FILE"
  note_server_pid
  SESSION_FILE="$HOME_DIR/.claude/sessions/$CLAUDE_PID.json"
  wait_for_file "$SESSION_FILE" "$TIMEOUT" || verdict FAIL "claude wrote no session file $SESSION_FILE"
  TRANSCRIPT=$("$PY" "$TOOLS" transcript --session-file "$SESSION_FILE" --home "$HOME_DIR" \
    --session-id "$SESSION_ID" 2>>"$WORK/tools.err") || verdict FAIL "$(tail -1 "$WORK/tools.err")"
  start_listener 0
  wait_for_file "$WORK/sse.ready" 10 || verdict FAIL "SSE subscriber could not attach: $(tail -1 "$WORK/listener.err")"
  log "session $SESSION_ID, claude pid $CLAUDE_PID, channel registered"
}

# inject CHAT_ID [--meta K=V]... CONTENT...: POST /inject, back to back
inject() {
  "$PY" "$TOOLS" inject --disc "$DISC_FILE" --chat-id "$@" >>"$WORK/inject.out" 2>>"$WORK/tools.err" \
    || verdict FAIL "POST /inject failed: $(tail -1 "$WORK/tools.err")"
}

tools() { "$PY" "$TOOLS" "$@" --timeout "$TIMEOUT" 2>>"$WORK/tools.err" || verdict FAIL "$(tail -1 "$WORK/tools.err")"; }
in_transcript() { tools grep --file "$TRANSCRIPT" --needle "$1" ${2:+--count "$2"}; }
settle() { tools settle --transcript "$TRANSCRIPT" --session-file "$SESSION_FILE"; }
keep_session_file() { cp "$SESSION_FILE" "$OUT/$SCENARIO.session-$1.json"; }
keep_transcript() {
  cp "$TRANSCRIPT" "$OUT/$SCENARIO.jsonl"
  log "$(wc -l < "$TRANSCRIPT") lines, $(wc -c < "$TRANSCRIPT") bytes -> $OUT/$SCENARIO.jsonl"
}

# held TEXT...: the first message's turn held at the model, the others sent
# meanwhile, then the model let go.
held() {
  local first=$1 n=1 text; shift
  keep_session_file idle
  inject e2e-held-1 "$first"
  tools status --session-file "$SESSION_FILE" --state busy
  in_transcript "$first"
  sleep 1
  keep_session_file busy
  for text in "$@"; do n=$((n+1)); inject "e2e-held-$n" "$text"; done
  for text in "$@"; do in_transcript "$text"; done
  sleep 1
  touch "$WORK/gate"
  settle
  keep_session_file idle-after
}

case "$SCENARIO" in
  roundtrip)
    touch "$WORK/gate"; tui_session
    inject e2e-a "hello from the round trip"
    tools grep --file "$WORK/events.jsonl" --needle "echo: hello from the round trip"
    settle;;
  busy)
    tui_session
    held "first message, held at the model" "second message, sent while busy";;
  busy-two)
    tui_session
    held "first message, held at the model" "second message, sent while busy" "third message, sent while busy";;
  text-only)
    touch "$WORK/gate"; tui_session
    inject e2e-c "E2E_TEXT_ONLY answer this in the terminal"
    in_transcript "answered in the terminal:"
    settle;;
  bash)
    touch "$WORK/gate"; tui_session
    inject e2e-d "please run E2E_BASH=echo hi > e2e-bash.txt && cat e2e-bash.txt"
    "$PY" "$TOOLS" allow --events "$WORK/events.jsonl" --disc "$DISC_FILE" --tool Bash --timeout 20 \
      >"$WORK/allow.out" 2>>"$WORK/tools.err" \
      || { pane > "$WORK/pane-permission.txt"
           verdict FAIL "the permission prompt for Bash was not relayed: $(tail -1 "$WORK/tools.err"); the terminal shows: $(tail -5 "$WORK/pane-permission.txt" | tr -s ' \n' ' ')"; }
    log "permission relayed and allowed: $(cat "$WORK/allow.out")"
    tools grep --file "$WORK/events.jsonl" --needle "done: hi"
    settle;;
  bash-readonly)
    touch "$WORK/gate"; tui_session
    inject e2e-d "please run E2E_BASH=echo hi"
    tools grep --file "$WORK/events.jsonl" --needle "done: hi"
    settle;;
  twice)
    touch "$WORK/gate"; tui_session
    inject e2e-e "the same words twice" "the same words twice"
    in_transcript "the same words twice" 2
    settle;;
  escape)
    touch "$WORK/gate"; tui_session
    inject e2e-g --meta "note=Zoë & Ann's <b>\"x\"</b> [1]" --meta "$(printf 'multi=one\ntwo')" --meta 1st=x \
      "$(printf 'quote " amp & lt < gt > close </channel> upper </CHANNEL> open <channel source="x"> tab\there\nline2 non-ASCII: ü é → 日本 😀')"
    in_transcript "line2"
    settle;;
  headless)
    PLUGIN=e2erec
    CH_SERVER="plugin:$PLUGIN:$NAME"
    TOOL_FQ="mcp__plugin_${PLUGIN}_$(printf %s "$NAME" | sed 's/[^A-Za-z0-9_-]/_/g')__reply"
    make_plugin "$PLUGIN"
    seed_config harbor "ledger=$PLUGIN"
    start_mock_mirror
    sessions="$HOME_DIR/.claude/sessions"
    snap() {  # snap WHEN: claude's session file, if it writes one
      [ -e "$sessions/$CLAUDE_PID.json" ] && cp "$sessions/$CLAUDE_PID.json" "$OUT/headless.session-$1.json"
      log "at $1: ~/.claude/sessions holds: $(ls "$sessions" 2>/dev/null | tr '\n' ' ') $(cat "$sessions"/*.json 2>/dev/null | tr '\n' ' ')"
    }
    rm -f "$OUT"/headless.session-*
    start_headless --plugin-dir "$WORK/plugin" --permission-mode default --allowedTools "$TOOL_FQ" \
      --debug-file "$WORK/claude-debug.log"
    wait_for_file "$DISC_FILE" "$TIMEOUT" || verdict FAIL "no discovery file $DISC_FILE"
    headless_enable_channel "$CH_SERVER" "$TIMEOUT"
    [ "$GATE" = registered ] || verdict FAIL "channel $CH_SERVER not registered ($GATE${GATE_REASON:+: $GATE_REASON})"
    note_server_pid
    sleep 1; snap started
    inject e2e-h "first headless message, held at the model"
    sleep 2; snap busy
    touch "$WORK/gate"
    "$PY" "$HARNESS_DIR/wait_for.py" mock-count --log "$WORK/mock.jsonl" --kind text --count 1 --timeout "$TIMEOUT" >/dev/null \
      || verdict FAIL "the headless turn did not end"
    sleep 2; snap idle
    TRANSCRIPT=$(ls -t "$HOME_DIR"/.claude/projects/*/*.jsonl 2>/dev/null | head -1)
    [ -n "$TRANSCRIPT" ] || verdict FAIL "claude -p wrote no transcript"
    log "claude -p's transcript: $TRANSCRIPT; the host's session id: $SESSION_ID; init: $(grep -o '"session_id":"[^"]*"' "$WORK/claude.out" | sort -u | tr '\n' ' ')"
    keep_transcript
    verdict PASS "headless: $(ls "$OUT"/headless.session-* 2>/dev/null | wc -l) session file snapshot(s), transcript $(basename "$TRANSCRIPT")";;
  *) verdict FAIL "unknown scenario $SCENARIO (one of: $ALL)";;
esac
keep_transcript
verdict PASS "$SCENARIO: $(wc -l < "$OUT/$SCENARIO.jsonl") transcript lines"
