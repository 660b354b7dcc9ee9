// Harness for the browser tests: spawns the real `opzero-host serve` the way
// Claude Code does (stdin and stdout are UNIX socket pairs: libuv makes
// `stdio: 'pipe'` a socketpair on Linux), plays Claude Code with raw JSON-RPC
// lines, signs a headless Chromium in through `opzero-host open`, and puts a
// TCP proxy it can cut in front of the bridge.
//
// Each host gets its own temporary HOME and OPZERO_HOME, so tests can run in
// parallel in one process and in several; hosts behind one hub (`Hub`)
// share the hub's OPZERO_HOME, each still with its own HOME.

import { spawn, execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';

import { after, before } from 'node:test';

import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.OPZERO_HOST_BIN ?? path.join(REPO, 'target', 'debug', 'opzero-host');
/// What Claude Code 2.1.328 wrote, recorded: the shapes the harness copies.
export const RECORDED = path.join(REPO, 'host', 'testdata', 'claude-2.1.328');
/// Screenshots (and, on a failure, what the page looked like).
export const OUT = path.join(REPO, 'target', 'browser-tests');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
/// How long anything may take to show up.
export const WAIT = 20_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const CHANNEL = 'notifications/claude/channel';
export const VERDICT = 'notifications/claude/channel/permission';
export const isChannel = (j) => j.method === CHANNEL;
/// A page's sign-in token.
export const TOKEN = /^[0-9a-f]{64}$/;
/// A grace long enough that a slow machine never makes a message the test
/// delivers `undelivered`.
export const PATIENT = '[mirror]\ngrace_ms = 60000\n';

/// One Chromium for a test file: launched before its tests (once the
/// screenshots an earlier run's failures left, named `failures*`, are
/// cleared), handed to `set`, closed after them.
export function useBrowser(failures, set) {
  let browser;
  before(async () => {
    await fsp.mkdir(OUT, { recursive: true });
    for (const f of await fsp.readdir(OUT)) {
      if (f.startsWith(failures)) await fsp.rm(path.join(OUT, f), { force: true });
    }
    browser = await launchBrowser();
    set(browser);
  });
  after(async () => {
    await browser?.close();
  });
}

/// What a host and a hub both have: the record they published (a
/// discovery file, `hub.json`) with their port and secret.
class Served {
  get port() {
    return this.record.port;
  }

  get secret() {
    return this.record.secret;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }
}

/// Retries `fn` (an assertion) until it passes or `timeout` ms pass; then
/// throws its last error.
export async function eventually(fn, { timeout = WAIT, every = 25 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    await sleep(every);
  }
}

/// Claude's reply with event id `id`, and the permission card of request `id`, in the conversation.
export const reply = (page, id) => page.locator(`#log article.msg.reply[data-event-id="${id}"]`);
export const card = (page, id) => page.locator(`#log article.card.permission[data-request-id="${id}"]`);

/// Waits until `locator` matches exactly `n` elements.
export async function count(locator, n, timeout = WAIT) {
  await eventually(async () => assert.equal(await locator.count(), n), { timeout });
}

/// Waits until `locator`'s attribute `name` is `value`.
export async function attr(locator, name, value) {
  await eventually(async () => assert.equal(await locator.getAttribute(name), value));
}

/// Waits until `locator`'s text (trimmed) is `expected`, or matches it.
export async function text(locator, expected) {
  await eventually(async () => {
    const t = (await locator.textContent()) ?? '';
    if (expected instanceof RegExp) assert.match(t, expected);
    else assert.equal(t.trim(), expected);
  });
}

export async function launchBrowser() {
  return chromium.launch({
    headless: true,
    executablePath: CHROMIUM,
    // This machine's closed network makes Chromium's background
    // connections fail loudly otherwise.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/// One stdout line of the host: its raw text and its JSON.
class Line {
  constructor(raw) {
    this.raw = raw;
    try {
      this.json = JSON.parse(raw);
    } catch {
      this.json = undefined;
    }
  }
}

export class Host extends Served {
  /// Starts a host; `config` is the text of its opzero.toml. With `claude`
  /// (`idle` or `busy`), Claude Code's session file is there from the start,
  /// and the host is following its transcript (`h.transcript`) when this
  /// returns, so the mirror's receipts come. `opzeroHome`: the state
  /// directory (discovery files) to share, a hub's; `name`: the session's
  /// name in Claude's session file; `project`: Claude's working directory
  /// is then a directory of that name (its transcript's `cwd`).
  static async start({ config = '', claude, opzeroHome, name = 'browser-test', project } = {}) {
    const home = await fsp.mkdtemp(path.join(os.tmpdir(), 'opzero-browser-'));
    // The host follows ~/.claude/sessions/<its parent's pid>.json; the
    // directory must be there for it to watch.
    await fsp.mkdir(path.join(home, '.claude', 'sessions'), { recursive: true });
    const configPath = path.join(home, 'opzero.toml');
    await fsp.writeFile(configPath, config);
    const h = new Host(home, randomUUID(), configPath, opzeroHome ?? home);
    h.name = name;
    if (project) {
      h.cwd = path.join(home, project);
      await fsp.mkdir(h.cwd, { recursive: true });
    }
    // Claude's own files (what it sends with a reply): never the host's
    // state directory, which the host refuses to send from.
    h.work = await fsp.mkdtemp(path.join(os.tmpdir(), 'opzero-browser-work-'));
    if (claude) {
      await h.transcript.open();
      await h.setClaudeStatus(claude);
    }
    h.spawn();
    try {
      await h.initialize();
      await h.discovery();
      if (claude) await h.followsTranscript();
    } catch (e) {
      await h.stop();
      throw e;
    }
    return h;
  }

  constructor(home, session, configPath, opzeroHome = home) {
    super();
    this.home = home;
    this.opzeroHome = opzeroHome;
    this.session = session;
    this.configPath = configPath;
    /** every stdout line, in order */
    this.lines = [];
    /** how many of `lines` have been taken by `take` */
    this.taken = new Set();
    this.waiters = [];
    this.stderr = '';
    this.nextId = 1;
  }

  spawn() {
    this.child = spawn(BIN, ['serve', '--config', this.configPath], {
      cwd: this.work,
      env: {
        ...process.env,
        HOME: this.home,
        OPZERO_HOME: this.opzeroHome,
        OPZERO_CHANNEL_SESSION_ID: this.session,
        OPZERO_LOG: 'debug',
      },
      // On Linux libuv makes each of these a UNIX socket pair, as Claude
      // Code's own spawn does.
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d) => (this.stderr += d));
    readline.createInterface({ input: this.child.stdout }).on('line', (raw) => {
      this.lines.push(new Line(raw));
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stdin.on('error', () => {});
  }

  /// Resolves when a new stdout line comes, or after `ms`.
  lineOrTimeout(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  describe() {
    const out = this.lines.map((l) => '  ' + l.raw).join('\n');
    const err = this.stderr.split('\n').slice(-40).join('\n');
    return `stdout so far:\n${out}\nstderr (last lines):\n${err}`;
  }

  /// The first stdout line not yet taken for which `pred(json, raw)` holds,
  /// waiting for it up to `timeout` ms; it is then taken.
  async take(pred, { timeout = WAIT, what = 'a matching stdout line' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = this.lines.findIndex((l, i) => !this.taken.has(i) && l.json !== undefined && pred(l.json, l.raw));
      if (i >= 0) {
        this.taken.add(i);
        return this.lines[i];
      }
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no ${what} on stdout within ${timeout} ms\n${this.describe()}`);
      await this.lineOrTimeout(left);
    }
  }

  /// Every stdout line (taken or not) whose method is `method`.
  withMethod(method) {
    return this.lines.filter((l) => l.json?.method === method);
  }

  /// The next channel notification (`notifications/claude/channel`).
  channelMessage(opts = {}) {
    return this.take((j) => j.method === 'notifications/claude/channel', { what: 'channel notification', ...opts });
  }

  /// Fails if a line matching `pred` (not taken yet) comes within `ms`.
  async noLine(pred, ms, what = 'line') {
    await sleep(ms);
    const extra = this.lines.filter((l, i) => !this.taken.has(i) && l.json !== undefined && pred(l.json));
    assert.deepEqual(extra.map((l) => l.raw), [], `unexpected ${what} on stdout`);
  }

  send(obj) {
    this.child.stdin.write(JSON.stringify(obj) + '\n');
  }

  /// A JSON-RPC request; returns its response line's JSON.
  async request(method, params) {
    const id = this.nextId++;
    this.send({ jsonrpc: '2.0', id, method, params });
    const line = await this.take((j) => j.id === id && !('method' in j), { what: `response to ${method} (id ${id})` });
    return line.json;
  }

  async initialize() {
    const r = await this.request('initialize', {
      protocolVersion: '2025-11-25',
      capabilities: {},
      clientInfo: { name: 'claude-code', version: '2.1.328' },
    });
    assert.ok(r.result, `initialize failed: ${JSON.stringify(r)}`);
    this.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    return r;
  }

  /// Claude calls a tool; returns the whole response.
  async callTool(name, args) {
    return this.request('tools/call', { name, arguments: args });
  }

  /// Claude calls `reply`, asserting the exact answer "sent (id: N)";
  /// returns N, the reply's event id.
  async reply(args) {
    const r = await this.callTool('reply', args);
    const text = r.result?.content?.[0]?.text ?? '';
    const m = /^sent \(id: (\d+)\)$/.exec(text);
    assert.ok(m, `reply was not sent: ${JSON.stringify(r)}`);
    const id = Number(m[1]);
    assert.deepEqual(r, {
      jsonrpc: '2.0',
      id: r.id,
      result: { content: [{ type: 'text', text: `sent (id: ${id})` }], isError: false },
    });
    return id;
  }

  /// Claude calls `reply` while no client reads the session's events (its
  /// page is closed, or open on another session of a hub), asserting the
  /// exact answer "queued (id: N; no client connected)"; returns N.
  async replyQueued(args) {
    const r = await this.callTool('reply', args);
    const text = r.result?.content?.[0]?.text ?? '';
    const m = /^queued \(id: (\d+); no client connected\)$/.exec(text);
    assert.ok(m, `reply was not queued: ${JSON.stringify(r)}`);
    assert.equal(r.result.isError, false);
    return Number(m[1]);
  }

  /// Claude asks for a tool approval.
  permissionRequest(params) {
    this.send({ jsonrpc: '2.0', method: 'notifications/claude/channel/permission_request', params });
  }

  /// Writes Claude Code's session file, the one the host follows: the
  /// host's parent is this process, which plays Claude Code.
  async setClaudeStatus(status) {
    const file = path.join(this.home, '.claude', 'sessions', `${process.pid}.json`);
    const tmp = file + '.tmp';
    const { cwd, sessionId } = this.transcript;
    await fsp.writeFile(tmp, JSON.stringify({ pid: process.pid, sessionId, cwd, name: this.name ?? 'browser-test', status }));
    await fsp.rename(tmp, file);
  }

  /// Claude Code's transcript of this session (see `Transcript`).
  get transcript() {
    this._transcript ??= new Transcript(this.home, this.session, this.cwd);
    return this._transcript;
  }

  /// `GET /status` with the secret: its JSON.
  async status() {
    const r = await this.http('GET', '/status', { headers: { 'X-OPZero-Secret': this.secret } });
    assert.equal(r.status, 200, r.body);
    return r.json;
  }

  /// Waits until the host follows Claude's transcript (its receipts are
  /// available), so lines written from now on are read.
  async followsTranscript() {
    await eventually(async () => assert.equal((await this.status()).receipts, 'available')).catch(async (e) =>
      assert.fail(`the host does not follow the transcript: ${e.message}\n${this.describe()}`),
    );
  }

  /// The discovery file ({port, secret, ...}), waited for.
  async discovery() {
    if (this.record) return this.record;
    const file = path.join(this.opzeroHome, 'channels', `${this.session}.json`);
    await eventually(async () => {
      this.record = JSON.parse(await fsp.readFile(file, 'utf8'));
    }).catch((e) => assert.fail(`no discovery file ${file}: ${e}\n${this.describe()}`));
    return this.record;
  }

  /// `opzero-host open SESSION --no-browser [--base URL]`: its one stdout line.
  async openLink({ base } = {}) {
    const args = ['open', this.session, '--no-browser'];
    if (base) args.push('--base', base);
    const { stdout } = await promisify(execFile)(BIN, args, {
      env: { ...process.env, HOME: this.home, OPZERO_HOME: this.opzeroHome, DISPLAY: '', WAYLAND_DISPLAY: '' },
      timeout: WAIT,
    });
    const lines = stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `open printed ${JSON.stringify(stdout)}`);
    return lines[0];
  }

  /// A raw HTTP/1.1 request to the bridge (Host 127.0.0.1:PORT unless
  /// given); resolves to {status, headers, body (string), json}.
  http(method, pathname, { headers = {}, body, port = this.port } = {}) {
    return rawHttp(port, method, pathname, { headers, body });
  }

  /// An HTTP request with the secret header and a JSON body.
  post(pathname, obj) {
    return this.http('POST', pathname, {
      headers: { 'X-OPZero-Secret': this.secret, 'Content-Type': 'application/json' },
      body: JSON.stringify(obj),
    });
  }

  /// The first event of the host's stream, its replay included, for which
  /// `pred(event)` holds (read with the secret, beside the page's stream).
  event(pred, { timeout = WAIT, what = 'a matching event' } = {}) {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: this.port,
          path: '/events?since=0',
          headers: { 'X-OPZero-Secret': this.secret, Accept: 'text/event-stream' },
          agent: false,
        },
        (res) => {
          res.setEncoding('utf8');
          let buffer = '';
          res.on('data', (d) => {
            buffer += d;
            const lines = buffer.split('\n');
            buffer = lines.pop();
            for (const l of lines) {
              if (!l.startsWith('data: ')) continue;
              const e = JSON.parse(l.slice('data: '.length));
              if (pred(e)) {
                clearTimeout(timer);
                req.destroy();
                resolve(e);
                return;
              }
            }
          });
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error(`no ${what} on /events within ${timeout} ms\n${this.describe()}`));
      }, timeout);
      req.on('error', reject);
      req.end();
    });
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
    await this._transcript?.close();
    await fsp.rm(this.home, { recursive: true, force: true });
    await fsp.rm(this.work, { recursive: true, force: true });
  }
}

/// Claude Code's transcript, `~/.claude/projects/<cwd, each character not
/// ASCII alphanumeric made a '-'>/<session>.jsonl`, written as Claude Code
/// 2.1.328 writes it: each line is a copy of a recorded one (RECORDED) with
/// this session's ids, the time and the content put in.
export class Transcript {
  constructor(home, sessionId, cwd = home) {
    this.cwd = fs.realpathSync(cwd);
    this.sessionId = sessionId;
    this.file = path.join(home, '.claude', 'projects', this.cwd.replace(/[^A-Za-z0-9]/g, '-'), `${sessionId}.jsonl`);
    this.last = null;
    this.handle = null;
  }

  /// Creates the file, empty, and keeps it open: each `write` is then one
  /// write(2) of whole lines, so the host never wakes to a line half
  /// written. (Claude Code opens the file for each append, and the host
  /// hears of the open too: that race is the host's own tests' business,
  /// not the page's.)
  async open() {
    await fsp.mkdir(path.dirname(this.file), { recursive: true });
    this.handle = await fsp.open(this.file, 'a');
  }

  async close() {
    await this.handle?.close();
    this.handle = null;
  }

  /// The `<channel>` tag Claude Code makes of a channel notification's
  /// params: its meta as attributes, its content with `</channel>` escaped.
  static tag({ content, meta = {} }, source = 'opzero-channel') {
    const attr = (v) => String(v).replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
    const attrs = Object.entries(meta).map(([k, v]) => ` ${k}="${attr(v)}"`).join('');
    return `<channel source="${source}"${attrs}>\n${content.replace(/<\/(channel)>/gi, '<\\/$1>')}\n</channel>`;
  }

  /// Appends these lines at once.
  async write(...lines) {
    assert.ok(this.handle, 'the transcript is not open (Host.start with `claude`)');
    const bytes = Buffer.from(lines.map((l) => JSON.stringify(l) + '\n').join(''));
    const { bytesWritten } = await this.handle.write(bytes);
    assert.equal(bytesWritten, bytes.length, 'a short write to the transcript');
  }

  /// A recorded line (the first of `file` for which `pred` holds), made
  /// this session's, now, and after the last one written.
  line(file, pred, change) {
    const l = structuredClone(recorded(file).find(pred));
    assert.ok(l, `no such line in ${path.join(RECORDED, file)}`);
    l.timestamp = new Date().toISOString();
    if ('sessionId' in l) l.sessionId = this.sessionId;
    if ('session_id' in l) l.session_id = this.sessionId;
    if ('cwd' in l) l.cwd = this.cwd;
    if ('uuid' in l) {
      l.uuid = randomUUID();
      l.parentUuid = this.last;
      this.last = l.uuid;
    }
    change(l);
    return l;
  }

  /// Claude Code took channel notification `n` (a stdout line's JSON) into
  /// its queue: the host's `queued`.
  enqueue(n) {
    const content = Transcript.tag(n.params);
    return this.write(this.line('text-only.jsonl', (l) => l.type === 'queue-operation' && l.operation === 'enqueue', (l) => (l.content = content)));
  }

  /// Then out of its queue, to the model: the host's `seen`.
  toModel(n) {
    const content = Transcript.tag(n.params);
    return this.write(
      this.line('text-only.jsonl', (l) => l.type === 'queue-operation' && l.operation === 'dequeue', () => {}),
      this.line('text-only.jsonl', (l) => l.type === 'user' && l.origin?.kind === 'channel', (l) => (l.message.content = content)),
    );
  }

  /// The model answers in text (in the terminal).
  say(text) {
    const isText = (l) => l.type === 'assistant' && l.message?.content?.[0]?.type === 'text';
    return this.write(this.line('text-only.jsonl', isText, (l) => (l.message.content = [{ type: 'text', text }])));
  }

  /// The model calls a built-in tool.
  tool(name, input) {
    const isBash = (l) => l.type === 'assistant' && l.message?.content?.[0]?.name === 'Bash';
    return this.write(
      this.line('bash.jsonl', isBash, (l) => (l.message.content = [{ type: 'tool_use', id: `toolu_${randomUUID().replace(/-/g, '')}`, name, input }])),
    );
  }

  /// The turn is over.
  endTurn() {
    return this.write(this.line('text-only.jsonl', (l) => l.type === 'system' && l.subtype === 'turn_duration', () => {}));
  }
}

/// The lines of a recorded transcript, read once.
const recordings = new Map();
function recorded(file) {
  if (!recordings.has(file)) {
    const text = fs.readFileSync(path.join(RECORDED, file), 'utf8');
    recordings.set(file, text.split('\n').filter(Boolean).map((l) => JSON.parse(l)));
  }
  return recordings.get(file);
}

export function rawHttp(port, method, pathname, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: pathname, headers: { Connection: 'close', ...headers }, agent: false },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, body: text, json });
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(WAIT, () => req.destroy(new Error(`${method} ${pathname}: no answer within ${WAIT} ms`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/// A TCP proxy on its own loopback port in front of the bridge. `cut()`
/// destroys every connection and refuses new ones until `restore()`;
/// `blackhole()` keeps connections open but drops what the bridge sends
/// (while keeping a copy in `swallowed`), as a dead network path would.
export class Proxy {
  static async start() {
    const p = new Proxy();
    await new Promise((resolve) => p.server.listen(0, '127.0.0.1', resolve));
    p.port = p.server.address().port;
    return p;
  }

  constructor() {
    this.sockets = new Set();
    this.refusing = false;
    this.dropping = false;
    this.swallowed = '';
    this.connections = 0;
    this.server = net.createServer((client) => {
      if (this.refusing || this.target === undefined) {
        client.destroy();
        return;
      }
      this.connections++;
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (d) => upstream.write(d));
      upstream.on('data', (d) => {
        if (this.dropping) this.swallowed += d.toString('utf8');
        else client.write(d);
      });
    });
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  blackhole() {
    this.dropping = true;
    this.swallowed = '';
  }

  cut() {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore() {
    this.refusing = false;
    this.dropping = false;
  }

  async stop() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/// A fresh browser context signed in to `host`'s page through `open`'s link
/// (through `base` when given, e.g. a proxy's origin); waits until the page
/// is signed in and its event stream is up. Returns {context, page, errors}.
export async function signIn(browser, host, { base, viewport = { width: 1280, height: 800 }, contextOptions = {} } = {}) {
  const context = await browser.newContext({ viewport, ...contextOptions });
  context.setDefaultTimeout(WAIT);
  await pageOverrides(context);
  return { context, ...(await signInPage(context, host, { base })) };
}

/// What the environment asks to serve in place of the binary's page files.
/// `OPZERO_TEST_APP_JS`: another app.js, a way to check that the tests
/// catch a broken page (a mutation of it) without rebuilding.
/// `OPZERO_TEST_WEB`: a directory whose index.html, app.js and app.css
/// stand in for the binary's (with the binary's own headers, its
/// Content-Security-Policy included), to try the page's sources against a
/// binary built before them.
export async function pageOverrides(context) {
  if (process.env.OPZERO_TEST_APP_JS) {
    const body = await fsp.readFile(process.env.OPZERO_TEST_APP_JS, 'utf8');
    await context.route('**/app.js', (route) => route.fulfill({ contentType: 'text/javascript', body }));
  }
  const dir = process.env.OPZERO_TEST_WEB;
  if (dir) {
    const files = { '/': 'index.html', '/app.js': 'app.js', '/app.css': 'app.css' };
    await context.route(
      (url) => url.hostname === '127.0.0.1' && url.pathname in files,
      async (route) => {
        const response = await route.fetch();
        // Only what the binary serves (with its CSP), not another local server's.
        if (!response.headers()['content-security-policy']) return route.fulfill({ response });
        const body = await fsp.readFile(path.join(dir, files[new URL(route.request().url()).pathname]), 'utf8');
        await route.fulfill({ response, body });
      },
    );
  }
}

/// A new page in `context`, signed in to `host` the same way. Returns
/// {page, errors, url}.
export async function signInPage(context, host, { base } = {}) {
  const page = await context.newPage();
  const errors = watchErrors(page);
  const url = await host.openLink({ base });
  assert.match(url, new RegExp(`^${(base ?? host.origin).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/#code=[0-9a-f]+$`));
  await page.goto(url);
  await signedIn(page);
  return { page, errors, url };
}

/// A fresh browser context signed in to `hub`'s page with one sign-in
/// link; waits until the page shows the session list with the hub's stream
/// up. Returns {context, page, errors}.
export async function signInHub(browser, hub, { viewport = { width: 1280, height: 800 }, contextOptions = {} } = {}) {
  const context = await browser.newContext({ viewport, ...contextOptions });
  context.setDefaultTimeout(WAIT);
  await pageOverrides(context);
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(await hub.signInLink());
  await signedIn(page);
  await page.locator('#sessions').waitFor({ state: 'visible', timeout: WAIT });
  return { context, page, errors };
}

/// Waits until `page` shows the signed-in view with its event stream up.
export async function signedIn(page) {
  await page.locator('#signin').waitFor({ state: 'hidden', timeout: WAIT });
  await page.locator('#sign-out').waitFor({ state: 'visible', timeout: WAIT });
  await page.locator('#connection[data-state="online"]').waitFor({ state: 'attached', timeout: WAIT });
}

/// The page's sign-in token, as it keeps it (sessionStorage), or null.
export function pageToken(page) {
  return page.evaluate(() => sessionStorage.getItem('opzero-token'));
}

/// `opzero-host hub --port 0`, the way a user runs it, on its own temporary
/// state directory (`home`, its OPZERO_HOME and HOME): hosts started with
/// `opzeroHome: hub.home` are the sessions it lists. Its port and secret
/// come from the `hub.json` it writes once it listens.
export class Hub extends Served {
  static async start({ config } = {}) {
    const home = await fsp.mkdtemp(path.join(os.tmpdir(), 'opzero-hub-'));
    const hub = new Hub(home);
    const args = ['hub', '--port', '0'];
    if (config !== undefined) {
      const file = path.join(home, 'hub-test.toml');
      await fsp.writeFile(file, config);
      args.push('--config', file);
    }
    hub.child = spawn(BIN, args, {
      cwd: home,
      env: { ...process.env, HOME: home, OPZERO_HOME: home, OPZERO_LOG: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    hub.exited = new Promise((resolve) => hub.child.once('exit', (code, signal) => resolve({ code, signal })));
    for (const [stream, key] of [[hub.child.stdout, 'stdout'], [hub.child.stderr, 'stderr']]) {
      stream.setEncoding('utf8');
      stream.on('data', (d) => (hub[key] += d));
    }
    try {
      const file = path.join(home, 'hub.json');
      await eventually(async () => {
        const record = JSON.parse(await fsp.readFile(file, 'utf8'));
        assert.equal(record.pid, hub.child.pid, 'hub.json is not this hub\'s');
        assert.ok(Number.isInteger(record.port) && record.port > 0, `hub.json has no port: ${JSON.stringify(record)}`);
        hub.record = record;
      }).catch((e) => assert.fail(`no hub.json in ${home}: ${e.message}\n${hub.describe()}`));
    } catch (e) {
      await hub.stop();
      throw e;
    }
    return hub;
  }

  constructor(home) {
    super();
    this.home = home;
    this.stdout = '';
    this.stderr = '';
  }

  describe() {
    const tail = (t) => t.split('\n').slice(-40).join('\n');
    return `hub stdout:\n${tail(this.stdout)}\nhub stderr (last lines):\n${tail(this.stderr)}`;
  }

  http(method, pathname, { headers = {}, body } = {}) {
    return rawHttp(this.port, method, pathname, { headers, body });
  }

  /// A sign-in link for the hub's page: a one-time code from
  /// `POST /login-code` with the hub's secret.
  async signInLink() {
    const r = await this.http('POST', '/login-code', { headers: { 'X-OPZero-Secret': this.secret } });
    assert.equal(r.status, 201, `POST /login-code: ${r.status} ${r.body}\n${this.describe()}`);
    assert.match(r.json?.code ?? '', /^[0-9a-f]+$/, r.body);
    return `${this.origin}/#code=${r.json.code}`;
  }

  /// `GET /sessions` with the secret: its list.
  async sessions() {
    const r = await this.http('GET', '/sessions', { headers: { 'X-OPZero-Secret': this.secret } });
    assert.equal(r.status, 200, r.body);
    return r.json.sessions;
  }

  /// Waits until the hub lists every one of `hosts`.
  async lists(...hosts) {
    await eventually(async () => {
      const ids = (await this.sessions()).map((s) => s.session_id);
      for (const h of hosts) assert.ok(ids.includes(h.session), `the hub does not list ${h.session}: ${JSON.stringify(ids)}`);
    }).catch((e) => assert.fail(`${e.message}\n${this.describe()}`));
  }

  async stop() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const late = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(late);
    }
    await fsp.rm(this.home, { recursive: true, force: true });
  }
}

/// A plain HTTP server on its own loopback port that records every request
/// it gets ({method, url, headers, rawHeaders}) and answers with a page:
/// the "other local listener" a link in a reply may lead to.
export class Recorder {
  static async start() {
    const r = new Recorder();
    await new Promise((resolve) => r.server.listen(0, '127.0.0.1', resolve));
    r.port = r.server.address().port;
    return r;
  }

  constructor() {
    this.requests = [];
    this.server = http.createServer((req, res) => {
      this.requests.push({ method: req.method, url: req.url, headers: { ...req.headers }, rawHeaders: [...req.rawHeaders] });
      req.resume();
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>another local server</title><p>hello');
    });
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/// Uncaught exceptions in the page (and console errors, kept for failure
/// reports).
export function watchErrors(page) {
  const errors = { uncaught: [], console: [] };
  page.on('pageerror', (e) => errors.uncaught.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.console.push(m.text());
  });
  return errors;
}

/// Saves a screenshot of `page` as OUT/name.png; returns its path.
/// On a failed test, saves what its page (`env.page`, if any) showed as
/// `PREFIX<test name>.png`, and adds where, and the page's errors, to `e`.
export async function keepFailure(e, t, env, prefix) {
  if (!env.page) return;
  const name = prefix + t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
  await screenshot(env.page, name).catch(() => {});
  e.message += `\n(page screenshot: ${path.join(OUT, name + '.png')})`;
  e.message += `\npage errors: ${JSON.stringify(env.errors)}`;
}

export async function screenshot(page, name) {
  await fsp.mkdir(OUT, { recursive: true });
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

export function isSocket(pid, fd) {
  return fs.statSync(`/proc/${pid}/fd/${fd}`).isSocket();
}

/// Deterministic bytes that are not text: every byte value, then a
/// pseudo-random tail.
export function binaryBytes(n, seed = 7) {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    if (i < 256) b[i] = i;
    else {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      b[i] = x >> 16;
    }
  }
  return b;
}
