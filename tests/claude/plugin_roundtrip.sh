#!/usr/bin/env bash
# The repo's own plugin (plugin/) in the real Claude Code, started exactly as
# its .mcp.json says: `opzero-host serve` from PATH, with no session id of
# ours. Claude Code names the channel plugin:opzero:opzero-channel; once it
# is on, an inject reaches the model, the model's `reply` reaches SSE, a
# file sent from the phone reaches the model as a path it can read, a file
# the model sends reaches the phone, and the discovery file carries the name
# of Claude's own transcript.
#   tests/claude/plugin_roundtrip.sh --plugin-dir HOST_BIN
#       claude -p --plugin-dir plugin/, the channel switched on with the SDK
#       control request channel_enable (-p ignores the dev-channels flag)
#   tests/claude/plugin_roundtrip.sh --installed HOST_BIN
#       the README's commands: claude plugin marketplace add, claude plugin
#       install, then the terminal UI with the README's channel flag
# Offline, with ../shared/claude-e2e's mock model API and helpers.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" plugin "$@"
CH_SERVER="plugin:opzero:$NAME"
TOOL_FQ="mcp__plugin_opzero_${NAME}__reply"
# What the README tells a person to allow: both tools.
ALLOWED="$TOOL_FQ,mcp__plugin_opzero_${NAME}__edit_message"
# The plugin starts `opzero-host` from PATH, as after `cargo install --path host`.
PATH="$(dirname "$HOST_BIN"):$PATH"
start_mock_with_files --reply-prefix "echo: "

T_LAUNCH=$(now)
if [ "$HOW" = --plugin-dir ]; then
  seed_config harbor ledger=opzero
  start_headless --plugin-dir "$ROOT/plugin" --permission-mode default \
    --allowedTools "$ALLOWED" --debug-file "$WORK/claude-debug.log"
else
  seed_config harbor
  # README, "As a Claude Code plugin": the same commands.
  for step in "plugin marketplace add $ROOT" "plugin install opzero@opzero"; do
    # shellcheck disable=SC2086
    (cd "$PROJ" && run_claude_env "$CLAUDE" $step) >>"$WORK/plugin-install.log" 2>&1 \
      || verdict FAIL "claude $step failed: $(tail -1 "$WORK/plugin-install.log")"
  done
  start_interactive --dangerously-load-development-channels plugin:opzero@opzero \
    --allowedTools "$ALLOWED" --permission-mode default --debug-file "$WORK/claude-debug.log"
fi
# The terminal UI asks about development channels before it starts servers.
[ "$HOW" = --installed ] && wait_channel_gate "$TIMEOUT"
# Which session? Whatever Claude Code chose: the one discovery file there is.
channels="$HOME_DIR/$DISC_DIR"
for _ in $(seq "$((TIMEOUT * 10))"); do
  DISC_FILE=$(ls "$channels"/*.json 2>/dev/null | head -1)
  [ -n "$DISC_FILE" ] && break
  sleep 0.1
done
[ -n "$DISC_FILE" ] || verdict FAIL "the plugin's host wrote no discovery file in $channels"
SESSION_ID=$(basename "$DISC_FILE" .json)
note_server_pid
[ "$HOW" = --plugin-dir ] && headless_enable_channel "$CH_SERVER" "$TIMEOUT"
[ "$GATE" = registered ] || verdict FAIL "channel $CH_SERVER not registered ($GATE${GATE_REASON:+: $GATE_REASON})"
log "channel $CH_SERVER registered after $(dt "$T_LAUNCH" "$(now)")s; session $SESSION_ID"

round_trip e2e-plugin "$CH_SERVER"
file_in "$CH_SERVER"
file_out

# The discovery file is named for the session whose transcript Claude writes.
transcript=$(ls "$HOME_DIR"/.claude/projects/*/"$SESSION_ID".jsonl 2>/dev/null | head -1)
[ -n "$transcript" ] || verdict FAIL "no transcript named $SESSION_ID.jsonl: the discovery file is not named for Claude's session ($(ls "$HOME_DIR"/.claude/projects/*/ 2>/dev/null | tr '\n' ' '))"
verdict PASS "the repo's plugin: channel $CH_SERVER, inject -> model -> reply -> SSE in $(dt "$T0" "$(now)")s, discovery file named for transcript $SESSION_ID"
