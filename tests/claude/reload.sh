#!/usr/bin/env bash
# A reload mid-session in the real Claude Code's terminal UI (tmux),
# offline with ../shared/claude-e2e's mock model API: the host runs a
# max-length filter on injects; a message reaches the model cut to
# max_chars, the config is saved with a new max_chars (as an editor saves
# it, by rename), and the next message reaches the model cut to the new
# value, through the same host and the same MCP connection (Claude Code
# connected to the server once, and the host initialized once).
#   tests/claude/reload.sh --tui HOST_BIN
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" reload "$@"
COMPONENT="$ROOT/target/wasm/wasm32-wasip2/wasm/max_length.wasm"
[ -f "$COMPONENT" ] || verdict FAIL "$COMPONENT is not built (cargo build-filters)"
MARKER="~"
write_config() {  # write_config MAX_CHARS: saved as an editor does, by rename
  printf '[[filter]]\nname = "short"\npath = "%s"\nhooks = ["inject"]\n[filter.config]\ninject = { max_chars = %s }\nmarker = "%s"\n' \
    "$COMPONENT" "$1" "$MARKER" > "$WORK/opzero.toml.new"
  mv "$WORK/opzero.toml.new" "$WORK/opzero.toml"
}
write_config 40
# The host's log, which Claude Code keeps no copy of, into a file of ours.
SERVER_CMD=(bash -c 'exec "$@" 2>>"$0"' "$WORK/host.err" "${SERVER_CMD[@]}" --config "$WORK/opzero.toml")
# GET /status's config, as JSON.
config_status() {
  "$PY" - "$DISC_FILE" <<'PYEOF'
import json, sys, urllib.request
d = json.load(open(sys.argv[1]))
req = urllib.request.Request("http://127.0.0.1:%d/status" % d["port"], headers={"X-OPZero-Secret": d["secret"]})
print(json.dumps(json.load(urllib.request.urlopen(req)).get("config")))
PYEOF
}

# cut_trip CHAT MAX_CHARS: an inject longer than MAX_CHARS reaches the model
# cut to MAX_CHARS (marker included), and the model's reply, the echo of
# what it saw, reaches SSE.
cut_trip() {
  local chat=$1 max=$2 content
  NONCE="$chat-$$-$RANDOM"
  content="$NONCE one two three four five six seven eight nine ten eleven twelve"
  echo_trip "$chat" "$CH_SERVER" "$content" "${content:0:$((max - ${#MARKER}))}$MARKER"
}

prepare_channel_session
start_mock --reply-prefix "echo: "
launch_channel_session
PID_BEFORE=$SRV_PID
start_listener 0
wait_for_file "$WORK/sse.ready" 10 || verdict FAIL "SSE subscriber could not attach: $(tail -1 "$WORK/listener.err")"

cut_trip e2e-before 40
T_SAVE=$(now)
write_config 25
reloaded() { config_status | "$PY" -c 'import json,sys; c=json.load(sys.stdin); sys.exit(not (c["state"] == "ok" and c["reloads"] == 1))'; }
for _ in $(seq "$((TIMEOUT * 10))"); do reloaded && break; sleep 0.1; done
reloaded || verdict FAIL "the host did not reload: $(config_status)"
T_RELOADED=$(now)
cut_trip e2e-after 25

note_server_pid
[ "$SRV_PID" = "$PID_BEFORE" ] || verdict FAIL "the host was restarted ($PID_BEFORE, now $SRV_PID)"
kill -0 "$CLAUDE_PID" 2>/dev/null || verdict FAIL "claude exited"
# Claude Code connected once, and the host was initialized once: no
# reconnect, no second initialize.
connects=$(grep -c "MCP server \"$NAME\": Starting connection" "$WORK/claude-debug.log" 2>/dev/null)
[ "$connects" = 1 ] || verdict FAIL "Claude Code connected to the server $connects times"
inits=$(grep -c "Claude Code initialized the session" "$WORK/host.err" 2>/dev/null)
[ "$inits" = 1 ] || verdict FAIL "the host was initialized $inits times"
grep -q "reloaded $WORK/opzero.toml" "$WORK/host.err" || verdict FAIL "the host's log does not say it reloaded"
verdict PASS "reload mid-session: max_chars 40 then 25 applied to the next message, reload in $(dt "$T_SAVE" "$T_RELOADED")s, same host (pid $SRV_PID), one MCP connection"
