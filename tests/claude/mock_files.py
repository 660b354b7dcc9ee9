"""The shared mock model API (../shared/claude-e2e/mock_anthropic.py), run
as it is, except that its `reply` call also carries `files` when the
channel message asks for one: a message holding `E2E_FILE=/abs/path` makes
the model call reply {chat_id, text, files: ["/abs/path"]}.

    python3 mock_files.py HARNESS_DIR [mock_anthropic.py's options]
"""
import re
import sys

sys.path.insert(0, sys.argv.pop(1))
import mock_anthropic as mock  # noqa: E402

ASKS_FOR_FILE = re.compile(r"E2E_FILE=(\S+)")
plain = mock.decide


def decide(body):
    kind, payload = plain(body)
    asked = ASKS_FOR_FILE.search(payload["text"]) if kind == "tool" else None
    if asked:
        payload = dict(payload, files=[asked.group(1)])
    return kind, payload


mock.decide = decide
mock.main()
