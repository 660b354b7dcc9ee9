#!/usr/bin/env bash
# Every test: the workspace's unit and end-to-end tests, the chat page in a
# real Chromium (tests/browser/), then the real Claude Code conformance suite
# (../shared/claude-e2e) against the built host, and the repo's plugin,
# `launch`, the transcript mirror, the notify plugin and a reload in the real Claude Code
# (tests/claude/).
#   tests/run-all.sh            everything
#   tests/run-all.sh --no-e2e   skip the Claude Code levels
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

e2e=1
[ "${1:-}" = "--no-e2e" ] && e2e=0

CLAUDE_VERSION=2.1.328
harness="$root/../shared/claude-e2e"

# The toolchain and the wasm32-wasip2 target rust-toolchain.toml names (rustup
# does this on first use too, unless RUSTUP_AUTO_INSTALL=0; then here).
rustup toolchain install --no-self-update

# This also builds target/debug/opzero-host, which the tests below run. (A
# separate `cargo build -p opzero-host` would build wasmtime a second time:
# the workspace's test build turns on other features of its dependencies.)
cargo test --workspace --locked

# The chat page in Debian's Chromium (Playwright's own browser download
# cannot work on these machines), driven by the pinned playwright-core.
chromium="${CHROMIUM_BIN:-$(command -v chromium || true)}"
[ -n "$chromium" ] || { echo "the browser tests need Chromium (apt-get install chromium)" >&2; exit 1; }
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
CHROMIUM_BIN="$chromium" node --test tests/browser/

[ $e2e = 1 ] || exit 0

# The pinned Claude Code, installed once per machine.
claude_dir="${XDG_CACHE_HOME:-$HOME/.cache}/opzero-host/claude-code-$CLAUDE_VERSION"
if [ ! -x "$claude_dir/node_modules/.bin/claude" ]; then
  mkdir -p "$claude_dir"
  npm install --prefix "$claude_dir" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_VERSION"
fi
export CLAUDE_BIN="$claude_dir/node_modules/.bin/claude"
command -v tmux >/dev/null || { echo "tmux is needed for the terminal-UI levels (apt-get install tmux)" >&2; exit 1; }

host="$root/target/debug/opzero-host"
cargo build-filters --locked   # the repo's opzero.toml names two of them
passed=0; failed=0
run_e2e() {
  local label=$1; shift
  echo "== claude-e2e ($label)"
  if "$harness/run_all.sh" -- "$host" serve "$@"; then passed=$((passed+1)); else failed=$((failed+1)); fi
}
run_e2e "no config" --config /dev/null
run_e2e "the repo's opzero.toml, with its filter chain" --config "$root/opzero.toml"
# The repo's own Claude Code plugin: loaded with --plugin-dir, and installed
# with the README's commands.
for how in --plugin-dir --installed; do
  echo "== plugin ($how)"
  if tests/claude/plugin_roundtrip.sh "$how" "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
done
# A session made without the channel, resumed with it by `launch`.
for how in --resume --continue; do
  echo "== launch $how"
  if tests/claude/resume.sh "$how" "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
done
# Receipts, answers left in the terminal and activity, from the transcript;
# and the silent drop of a session started without the channel.
for how in --enabled --not-enabled; do
  echo "== mirror $how"
  if tests/claude/mirror.sh "$how" "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
done
# The notify plugin against a local ntfy stand-in: a finished phone turn, a
# permission prompt, and a message Claude Code never took.
for how in --enabled --not-enabled; do
  echo "== notify $how"
  if tests/claude/notify.sh "$how" "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
done
# The config changed under a running session: the next message takes the new filter settings, on the same connection.
echo "== reload"; if tests/claude/reload.sh --tui "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
# Two sessions started with `launch`, one hub: each message reaches its own session, each reply its own page.
echo "== hub"; if tests/claude/hub.sh "$host"; then passed=$((passed+1)); else failed=$((failed+1)); fi
echo "claude-e2e: $passed passed, $failed failed"
[ $failed = 0 ]
