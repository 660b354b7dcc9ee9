"""The shared mock model API (../shared/claude-e2e/mock_anthropic.py), run
as it is (the `reply` echo, E2E_REPLY, --gate-file, side requests), except:

  * The model answers every channel message, one `reply` per request, the
    oldest first, also one Claude Code folds into the running turn (a
    queued_command: it reaches the model in a `system` message after the
    tool_result). The shared mock answers only the last <channel> tag of a
    fresh user turn.
    A message counts as answered once a `reply` to its chat_id is in the
    conversation (one reply for each message).
  * E2E_TEXT_ONLY in a message: the model answers plain text, "answered in
    the terminal: <body>", and ends its turn: no `reply` to that message.
  * E2E_BASH=<cmd> in a message: the model calls the built-in Bash tool
    with {"command": <cmd> (the rest of that line), "description": "e2e
    bash step"}; once its tool_result comes back, it calls `reply` {that
    message's chat_id, text "done: <the result>"}. --gate-file holds this
    call too, as it holds any tool call.

    python3 mock_mirror.py HARNESS_DIR [mock_anthropic.py's options]
"""
import re
import sys
import threading

sys.path.insert(0, sys.argv.pop(1))
import mock_anthropic as mock  # noqa: E402

TEXT_ONLY = "E2E_TEXT_ONLY"
BASH = re.compile(r"E2E_BASH=(.+)")
BASH_DESCRIPTION = "e2e bash step"
plain = mock.decide
# The shared mock names every tool call it makes ARGS.tool; this request's
# decision may name another (Bash). Each request runs on its own thread.
this_request = threading.local()


class ToolOfThisRequest:
    """mock.ARGS, whose `tool` is the tool this request's decision calls."""

    def __init__(self, args):
        self._args = args

    def __getattr__(self, key):
        if key == "tool":
            return getattr(this_request, "tool", None) or self._args.tool
        return getattr(self._args, key)


def channel_tags(text):
    """(attributes, body) of each <channel> tag in text, in order; the
    instructions' example tag (chat_id "...") is no message."""
    tags = [(dict(mock.ATTR_RE.findall(attrs)), body.strip()) for attrs, body in mock.CHANNEL_RE.findall(text)]
    return [t for t in tags if t[0].get("chat_id") != "..."]


def unanswered(body):
    """The channel messages of the conversation that no `reply` to their
    chat_id has answered yet (each reply answers one), in order; a message
    asking for text only is never waiting."""
    replied = {}
    for m in body.get("messages") or []:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == mock.ARGS.tool:
                    chat = (b.get("input") or {}).get("chat_id")
                    replied[chat] = replied.get(chat, 0) + 1
    waiting = []
    for m in body.get("messages") or []:
        if m.get("role") not in ("user", "system"):
            continue
        for attrs, text in channel_tags(mock.text_of(m.get("content"))):
            chat = attrs.get("chat_id", "inject")
            if replied.get(chat):
                replied[chat] -= 1
            elif TEXT_ONLY not in text:
                waiting.append((chat, text))
    return waiting


def bash_result(body):
    """The text of the tool_result answering our Bash call, when that is
    what the newest user turn holds."""
    user = mock.newest_user_turn(body)
    if not mock.is_tool_result_turn(user):
        return None
    bash_ids = {b.get("id") for m in body.get("messages") or [] if m.get("role") == "assistant"
                and isinstance(m.get("content"), list) for b in m["content"]
                if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Bash"}
    for b in user["content"]:
        if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") in bash_ids:
            return mock.text_of(b.get("content"))
    return None


def decide(body):
    this_request.tool = None
    if mock.ARGS.tool not in [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]:
        return plain(body)  # a side request (a title, a summary): not the conversation
    result = bash_result(body)
    waiting = unanswered(body)
    if result is not None and waiting:
        chat = next((c for c, text in waiting if BASH.search(text)), waiting[0][0])
        return "tool", {"chat_id": chat, "text": "done: " + result.strip()}
    user = mock.newest_user_turn(body)
    if user is not None and not mock.is_tool_result_turn(user):
        newest = channel_tags(mock.text_of(user.get("content")))
        if newest and TEXT_ONLY in newest[-1][1]:
            return "text", "answered in the terminal: " + newest[-1][1]
    if not waiting:
        return plain(body)
    chat, text = waiting[0]
    asked = BASH.search(text)
    if asked:
        this_request.tool = "Bash"
        return "tool", {"command": asked.group(1).strip(), "description": BASH_DESCRIPTION}
    return "tool", {"chat_id": chat, "text": mock.ARGS.reply_prefix + text}


def server(*args, **kwargs):
    """The shared mock's server, made once main() has parsed its options."""
    mock.ARGS = ToolOfThisRequest(mock.ARGS)
    return shared_server(*args, **kwargs)


shared_server = mock.ThreadingHTTPServer
mock.decide = decide
mock.ThreadingHTTPServer = server
mock.main()
