#!/usr/bin/env python3
"""How soon a host with an empty filter cache answers Claude Code, and how
soon it announces its bridge (the discovery file): the first start of a
debug build with the repo's two filters is the slowest start there is.

    cargo build -p opzero-host && cargo build-filters
    bench/cold_start.py [BIN] [CONFIG] [RUNS]   # defaults: target/debug/opzero-host opzero.toml 5

Each run spawns `BIN serve` as Claude Code does (socket pairs for stdin and
stdout, a fresh OPZERO_HOME, so nothing is cached), sends `initialize`, and
reports when its answer arrives and when the discovery file appears.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, uuid

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "cold-start", "version": "1"}}}


def one(binary, config):
    home = tempfile.mkdtemp(prefix="opzero-cold-")
    session = str(uuid.uuid4())
    ours_in, theirs_in = socket.socketpair()
    ours_out, theirs_out = socket.socketpair()
    env = dict(os.environ, OPZERO_HOME=home, OPZERO_CHANNEL_SESSION_ID=session)
    started = time.monotonic()
    host = subprocess.Popen([binary, "serve", "--config", config], stdin=theirs_in, stdout=theirs_out,
                            stderr=subprocess.DEVNULL, env=env)
    theirs_in.close()
    theirs_out.close()
    try:
        ours_in.sendall(json.dumps(INIT).encode() + b"\n")
        ours_out.settimeout(30)
        answer = b""
        while b"\n" not in answer:
            chunk = ours_out.recv(65536)
            if not chunk:
                raise SystemExit("the host closed stdout before answering initialize")
            answer += chunk
        initialized = time.monotonic() - started
        ours_in.sendall(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        path = os.path.join(home, "channels", session + ".json")
        deadline = started + 60
        while not os.path.exists(path):
            if time.monotonic() > deadline or host.poll() is not None:
                raise SystemExit("no discovery file within 60 s (or the host exited)")
            time.sleep(0.001)
        announced = time.monotonic() - started
    finally:
        ours_in.close()
        try:
            host.wait(5)
        except subprocess.TimeoutExpired:
            host.kill()
        ours_out.close()
        shutil.rmtree(home, ignore_errors=True)
    return initialized * 1000, announced * 1000


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/opzero-host"
    config = sys.argv[2] if len(sys.argv) > 2 else "opzero.toml"
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    results = [one(binary, config) for _ in range(runs)]
    for i, (init, disc) in enumerate(results, 1):
        print(f"run {i}: initialize answered after {init:.1f} ms, discovery file after {disc:.0f} ms")
    print(f"median: initialize {statistics.median(r[0] for r in results):.1f} ms, "
          f"discovery file {statistics.median(r[1] for r in results):.0f} ms "
          f"({binary}, {config}, empty cache)")


if __name__ == "__main__":
    main()
