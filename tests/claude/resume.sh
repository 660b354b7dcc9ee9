#!/usr/bin/env bash
# A session that was started without the channel gets it on resume, under
# its own id, in the real Claude Code: two sessions are made with
# `claude -p --session-id`, then `opzero-host launch` resumes one in the
# terminal UI, and a round trip (inject -> model -> reply -> SSE) reaches
# it: the discovery file and the transcript that grows are the resumed
# session's; and status events say Claude went busy, then idle.
#   tests/claude/resume.sh --resume HOST_BIN     launch --resume <the older one>
#   tests/claude/resume.sh --continue HOST_BIN   launch --continue: the newest
# Offline, with ../shared/claude-e2e's mock model API and helpers.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" resume "$@"
seed_config harbor
start_mock --reply-prefix "echo: "

# Two earlier sessions of this project, the second one newer.
OLD=$("$PY" -c 'import uuid;print(uuid.uuid4())'); NEW=$("$PY" -c 'import uuid;print(uuid.uuid4())')
for id in "$OLD" "$NEW"; do
  (cd "$PROJ" && run_claude_env "$CLAUDE" -p "an earlier prompt of $id" --session-id "$id") >>"$WORK/earlier.log" 2>&1 \
    || verdict FAIL "claude -p --session-id $id failed: $(tail -1 "$WORK/earlier.log")"
  sleep 1.1   # the next transcript is newer by its modification time
done
case "$HOW" in
  --resume) SESSION_ID=$OLD; launch_args=(--resume "$OLD");;
  --continue) SESSION_ID=$NEW; launch_args=(--continue);;
  *) verdict FAIL "usage: $0 --resume|--continue HOST_BIN";;
esac
transcript=$(ls "$HOME_DIR"/.claude/projects/*/"$SESSION_ID".jsonl 2>/dev/null | head -1)
[ -n "$transcript" ] || verdict FAIL "claude -p wrote no transcript $SESSION_ID.jsonl"
DISC_FILE="$HOME_DIR/$DISC_DIR/$SESSION_ID.json"

# opzero-host launch, as a person types it, finding claude through CLAUDE_BIN.
export CLAUDE_BIN="$CLAUDE"
T_LAUNCH=$(now)
CLAUDE="$HOST_BIN"
start_interactive launch --cwd "$PROJ" "${launch_args[@]}" -- \
  --permission-mode default --debug-file "$WORK/claude-debug.log"
wait_channel_gate "$TIMEOUT"
T_GATE=$(now)
[ "$GATE" = registered ] || verdict FAIL "channel not registered ($GATE${GATE_REASON:+: $GATE_REASON}); UI: ${UI_NOTE:-}"
wait_for_file "$DISC_FILE" "$TIMEOUT" || verdict FAIL "no discovery file named $SESSION_ID: $(ls "$HOME_DIR/$DISC_DIR" 2>/dev/null | tr '\n' ' ')"
note_server_pid

round_trip e2e-resume "$NAME"
# Claude was working on it, then was done: its session file says so.
wait_status_busy_then_idle
# It was that session that went on: its transcript holds the message.
for _ in $(seq 50); do grep -q "$NONCE" "$transcript" && break; sleep 0.1; done
grep -q "$NONCE" "$transcript" || verdict FAIL "the message is not in $SESSION_ID's transcript: another session got it"
verdict PASS "launch ${launch_args[*]}: session $SESSION_ID resumed with the channel, round trip in $(dt "$T0" "$(now)")s (launch -> channel registered $(dt "$T_LAUNCH" "$T_GATE")s)"
