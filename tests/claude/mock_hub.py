"""The shared mock model API (../shared/claude-e2e/mock_anthropic.py), run
as it is, except that its `reply` call also names the session that asked:
the text is "<prefix><body> [session <id>]", where id is the session_id
Claude Code puts in the request's metadata.user_id (a JSON string, as
2.1.328 sends it), or "?" when there is none. So a reply says which
Claude Code wrote it, not only which message it answers.

    python3 mock_hub.py HARNESS_DIR [mock_anthropic.py's options]
"""
import json
import sys

sys.path.insert(0, sys.argv.pop(1))
import mock_anthropic as mock  # noqa: E402

plain = mock.decide


def session_of(body):
    try:
        return json.loads(body["metadata"]["user_id"])["session_id"]
    except (KeyError, TypeError, ValueError):
        return "?"


def decide(body):
    kind, payload = plain(body)
    if kind == "tool":
        payload = dict(payload, text="%s [session %s]" % (payload["text"], session_of(body)))
    return kind, payload


mock.decide = decide
mock.main()
