#!/usr/bin/env python3
"""What record_transcript.sh needs to watch Claude Code's own files, and
to describe the transcripts it keeps (stdlib only).

  status --session-file F --state busy|idle [--timeout S]
      wait until Claude's session file (~/.claude/sessions/<pid>.json) says
      that state
  grep --file F --needle N [--count K] [--timeout S]
      wait until F holds N at least K times (default 1)
  transcript --session-file F --home H [--session-id ID]
      print where the transcript of that session is (whether it exists
      yet or not): H/.claude/projects/<its cwd, every character but
      letters and digits as ->/<its sessionId>.jsonl; fail if its
      sessionId is not ID
  settle --transcript T --session-file F [--quiet S] [--timeout S]
      wait until Claude is idle and T has not changed for S seconds (2)
  inject --disc D --chat-id C [--meta K=V]... CONTENT...
      POST /inject each CONTENT, one right after the other (one process,
      no start-up time between them); fail unless each answers 2xx
  allow --events E --disc D --tool NAME [--timeout S]
      wait for a permission_request event for NAME on the host's /events
      (as chan_client.py listen writes them to E), answer it
      POST /permission {request_id, behavior: "allow"}, print the event
  event --events E --type T [--field K=V]... [--timeout S]
      wait for an event of type T (with each field K equal to V) on the
      host's /events, as chan_client.py listen writes them to E; print it
  post --disc D --path P --body JSON
      POST the body to the host; print [status, body], whatever the status
  summary FILE...
      one line per transcript line: its number, size, and what it is
"""
import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request


def wait(what, timeout, why):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    sys.exit("timed out after %ss: %s" % (timeout, why))


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_status(a):
    wait(lambda: (read_json(a.session_file) or {}).get("status") == a.state, a.timeout,
         "%s never said status %s" % (a.session_file, a.state))


def cmd_grep(a):
    def enough():
        try:
            with open(a.file, encoding="utf-8") as f:
                return f.read().count(a.needle) >= a.count
        except OSError:
            return False
    wait(enough, a.timeout, "%s does not hold %r %d times" % (a.file, a.needle, a.count))


def cmd_transcript(a):
    s = read_json(a.session_file) or {}
    if a.session_id and s.get("sessionId") != a.session_id:
        sys.exit("%s: sessionId %s, not %s" % (a.session_file, s.get("sessionId"), a.session_id))
    project = re.sub("[^A-Za-z0-9]", "-", s["cwd"])
    print(os.path.join(a.home, ".claude", "projects", project, s["sessionId"] + ".jsonl"))


def cmd_settle(a):
    seen = {"size": -1, "since": time.time()}

    def settled():
        size = os.path.getsize(a.transcript) if os.path.exists(a.transcript) else -1
        if size != seen["size"]:
            seen.update(size=size, since=time.time())
        idle = (read_json(a.session_file) or {}).get("status") == "idle"
        return idle and time.time() - seen["since"] >= a.quiet
    wait(settled, a.timeout, "Claude did not settle (idle, %s unchanged)" % a.transcript)


def post(disc, path, body):
    d = read_json(disc)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (d["port"], path), json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "X-OPZero-Secret": d["secret"]})
    answer = urllib.request.urlopen(req, timeout=10)
    return [answer.status, answer.read().decode()]


def cmd_inject(a):
    meta = dict(kv.split("=", 1) for kv in a.meta or [])
    for content in a.content:
        body = {"content": content, "chat_id": a.chat_id}
        if meta:
            body["meta"] = meta
        print(json.dumps({"t": time.time(), "answer": post(a.disc, "/inject", body)}))


def events_of(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    except (OSError, ValueError):
        return []


def cmd_event(a):
    fields = dict(kv.split("=", 1) for kv in a.field or [])
    def found():
        for e in events_of(a.events):
            if e.get("type") == a.type and all(str(e.get(k)) == v for k, v in fields.items()):
                return e
    print(json.dumps(wait(found, a.timeout, "no %s event %s on /events" % (a.type, fields))))


def cmd_post(a):
    d = read_json(a.disc)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (d["port"], a.path), a.body.encode(),
                                 {"Content-Type": "application/json", "X-OPZero-Secret": d["secret"]})
    try:
        answer = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        answer = e
    print(json.dumps([answer.status, json.loads(answer.read().decode())]))


def cmd_allow(a):
    def request():
        try:
            with open(a.events, encoding="utf-8") as f:
                for line in f:
                    e = json.loads(line)
                    if e.get("type") == "permission_request" and e.get("tool_name") == a.tool:
                        return e
        except (OSError, ValueError):
            return None
    event = wait(request, a.timeout, "no permission_request for %s on /events" % a.tool)
    answer = post(a.disc, "/permission", {"request_id": event["request_id"], "behavior": "allow"})
    print(json.dumps({"event": event, "answer": answer}))


def describe(entry):
    """type / operation / subtype / attachment.type / isMeta / origin, as set."""
    parts = [str(entry.get("type"))]
    for key in ("operation", "subtype"):
        if key in entry:
            parts.append("%s=%s" % (key, entry[key]))
    att = entry.get("attachment")
    if isinstance(att, dict):
        parts.append("attachment.type=%s" % att.get("type"))
    if "isMeta" in entry:
        parts.append("isMeta=%s" % json.dumps(entry["isMeta"]))
    if "origin" in entry:
        parts.append("origin=%s" % json.dumps(entry["origin"], separators=(",", ":")))
    msg = entry.get("message")
    if isinstance(msg, dict):
        c = msg.get("content")
        if isinstance(c, str):
            parts.append("content=str")
        elif isinstance(c, list):
            blocks = []
            for b in c:
                if isinstance(b, dict):
                    blocks.append(b.get("type", "?") + (":" + b["name"] if b.get("type") == "tool_use" else ""))
            parts.append("content=[%s]" % ",".join(blocks))
    return " ".join(parts)


def cmd_summary(a):
    for path in a.files:
        print("== %s" % path)
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    entry = json.loads(raw)
                except ValueError:
                    print("%3d %7d NOT JSON" % (n, len(raw)))
                    continue
                print("%3d %7d %s" % (n, len(raw), describe(entry)))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status")
    s.add_argument("--session-file", required=True)
    s.add_argument("--state", required=True, choices=["busy", "idle"])
    s = sub.add_parser("grep")
    s.add_argument("--file", required=True)
    s.add_argument("--needle", required=True)
    s.add_argument("--count", type=int, default=1)
    s = sub.add_parser("transcript")
    s.add_argument("--session-file", required=True)
    s.add_argument("--home", required=True)
    s.add_argument("--session-id")
    s = sub.add_parser("settle")
    s.add_argument("--transcript", required=True)
    s.add_argument("--session-file", required=True)
    s.add_argument("--quiet", type=float, default=2)
    s = sub.add_parser("inject")
    s.add_argument("--disc", required=True)
    s.add_argument("--chat-id", required=True)
    s.add_argument("--meta", action="append")
    s.add_argument("content", nargs="+")
    s = sub.add_parser("allow")
    s.add_argument("--events", required=True)
    s.add_argument("--disc", required=True)
    s.add_argument("--tool", required=True)
    s = sub.add_parser("event")
    s.add_argument("--events", required=True)
    s.add_argument("--type", required=True)
    s.add_argument("--field", action="append")
    s = sub.add_parser("post")
    s.add_argument("--disc", required=True)
    s.add_argument("--path", required=True)
    s.add_argument("--body", required=True)
    s = sub.add_parser("summary")
    s.add_argument("files", nargs="+")
    for s in sub.choices.values():
        s.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    {"status": cmd_status, "grep": cmd_grep, "inject": cmd_inject, "transcript": cmd_transcript, "settle": cmd_settle, "allow": cmd_allow, "event": cmd_event, "post": cmd_post,
     "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
