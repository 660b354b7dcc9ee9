// The built-in chat page in a real browser (headless Chromium from the
// system), against the real opzero-host binary whose stdin and stdout play
// Claude Code. Run: npm ci --prefix tests/browser && node --test tests/browser/
// (after cargo build -p opzero-host). Screenshots go to target/browser-tests/.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import {
  BIN,
  CHANNEL,
  Host,
  PATIENT,
  Proxy,
  Recorder,
  WAIT,
  binaryBytes,
  eventually,
  isSocket,
  pageToken,
  rawHttp,
  screenshot,
  signIn,
  signInPage,
  signedIn,
  sleep,
  TOKEN,
  useBrowser,
  VERDICT,
  isChannel,
  watchErrors,
  attr,
  card,
  count,
  reply,
  text,
  keepFailure,
} from './harness.mjs';

/// A grace short enough to wait for.
const IMPATIENT = '[mirror]\ngrace_ms = 2000\n';

let browser;
useBrowser('failure-', (b) => (browser = b));

/// Runs `body` with its own host (and proxy), signed in unless `signedIn` is
/// false; on a failure adds what the host printed and saves what the page
/// showed; always cleans up. Fails on any uncaught exception in the page.
/// With `claude` (`idle` or `busy`), the host follows Claude Code's session
/// file and transcript from the start (see Host.start).
async function withHost(t, opts, body) {
  const { config = '', claude, proxy: wantProxy = false, signedIn = true, viewport, contextOptions } = opts;
  const proxy = wantProxy ? await Proxy.start() : undefined;
  const allowed = proxy ? `[bridge]\nallowed_hosts = ["127.0.0.1:${proxy.port}"]\n` : '';
  const h = await Host.start({ config: allowed + config, claude });
  if (proxy) proxy.target = h.port;
  const env = { h, proxy, contexts: [] };
  try {
    if (signedIn) {
      const s = await signIn(browser, h, { base: proxy?.origin, viewport, contextOptions });
      env.contexts.push(s.context);
      Object.assign(env, s);
    }
    await body(env);
    if (env.errors) assert.deepEqual(env.errors.uncaught, [], 'uncaught exceptions in the page');
  } catch (e) {
    await keepFailure(e, t, env, 'failure-');
    e.message += `\n${h.describe()}`;
    throw e;
  } finally {
    for (const c of env.contexts) await c.close().catch(() => {});
    await proxy?.stop();
    await h.stop();
  }
}

const mineMsg = (page, id) => page.locator(`#log article.msg.mine[data-message-id="${id}"]`);

/// Types `content` in the composer and presses Enter; returns the channel
/// notification it made, checked to be exactly what Claude Code must see.
async function sendTyped(h, page, content, meta = {}) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(content);
  await box.press('Enter');
  const n = await h.channelMessage();
  assert.deepEqual(n.json, { jsonrpc: '2.0', method: CHANNEL, params: { content, meta: { chat_id: 'web', ...meta } } });
  // The page has taken the host's answer: the box is empty again.
  await eventually(async () => assert.equal(await box.inputValue(), ''));
  return n;
}

/// Claude Code takes the message of channel notification `n` (a stdout
/// line) into its queue, then hands it to the model: its transcript says so.
async function deliver(h, n) {
  await h.transcript.enqueue(n.json);
  await h.transcript.toModel(n.json);
}

/// The mark of message `node` reads `label`, with data-state `state`.
async function marked(node, state, label) {
  await attr(node, 'data-state', state);
  await text(node.locator('.mark'), label);
}

/// The conversation as it reads, top to bottom: "me: TEXT" for a message
/// sent here (TEXT: the one of `sent` it shows), "claude: ID" for a reply,
/// "card: ID" for a permission card.
function order(page, sent) {
  return page.locator('#log > *').evaluateAll((els, sent) =>
    els.flatMap((e) => {
      if (e.matches('article.msg.mine')) return [`me: ${sent.find((t) => e.textContent.includes(t)) ?? e.textContent}`];
      if (e.matches('article.msg.reply')) return [`claude: ${e.dataset.eventId}`];
      if (e.matches('article.card.permission')) return [`card: ${e.dataset.requestId}`];
      return [];
    }),
  sent);
}

// A realistic conversation, for the screenshots and the phone test.
async function conversation(h, page, dir) {
  await deliver(h, await sendTyped(h, page, 'The CI run failed again. Can you look at why, and fix it if it is simple?'));
  const log = path.join(dir, 'ci-build.log');
  await fsp.writeFile(log, 'error: could not find chromium\n'.repeat(40));
  const id = await h.reply({
    chat_id: 'web',
    text:
      'Found it: the **browser tests** need `chromium`, and CI does not install it.\n\n' +
      '- add `apt-get install -y chromium` to `.ci/run`\n' +
      '- pin `playwright-core` in `tests/browser/package.json`\n\n' +
      'The full log is attached. Shall I make the change?',
    files: [log],
  });
  await reply(page, id).waitFor();
  await deliver(h, await sendTyped(h, page, 'Yes please, go ahead.'));
  await h.setClaudeStatus('busy');
  await h.transcript.tool('Edit', { file_path: '.ci/run', old_string: 'apt-get install -y tmux', new_string: 'apt-get install -y tmux chromium' });
  h.permissionRequest({
    request_id: 'kqmzp',
    tool_name: 'Edit',
    description: 'Add the chromium install to .ci/run',
    input_preview: '{"file_path": ".ci/run", "old_string": "apt-get install -y tmux", "new_string": "apt-get install -y tmux chromium"}',
  });
  await card(page, 'kqmzp').waitFor();
  await attr(page.locator('#claude-state'), 'data-state', 'busy');
  await text(page.locator('#activity'), 'Edit: .ci/run');
  for (const m of await page.locator('#log article.msg.mine').all()) await marked(m, 'seen', 'seen by Claude');
  const sent = ['The CI run failed again. Can you look at why, and fix it if it is simple?', 'Yes please, go ahead.'];
  assert.deepEqual(await order(page, sent), [
    'me: The CI run failed again. Can you look at why, and fix it if it is simple?',
    `claude: ${id}`,
    'me: Yes please, go ahead.',
    'card: kqmzp',
  ]);
  return id;
}

// One test at a time: with three pages at once, a page now and then stopped
// answering Playwright for 20 s (test 11's phone page, about one run in
// six, with the binaries of this session and the last alike).
describe('the chat page in Chromium', { concurrency: 1 }, () => {
  test('the host runs as under Claude Code: stdin and stdout are socket pairs', (t) =>
    withHost(t, { signedIn: false }, async ({ h }) => {
      assert.ok(isSocket(h.child.pid, 0) && isSocket(h.child.pid, 1), 'stdin/stdout are not sockets');
      await eventually(() => assert.match(h.stderr, /stdin and stdout are sockets/));
    }));

  test('1. signs in through open\'s link (a token in sessionStorage, no cookie); the same link a second time says it was used', (t) =>
    withHost(t, {}, async ({ h, page, context, url }) => {
      // Signed in: the code left the address bar; the token is in this
      // tab's sessionStorage, and nowhere a browser sends by itself.
      assert.equal(new URL(page.url()).hash, '', 'the code stays in the URL');
      await text(page.locator('#session'), h.session.slice(0, 8));
      assert.ok(await page.locator('#signin').isHidden());
      assert.ok(await page.locator('#sign-out').isVisible(), 'no Sign out while signed in');
      const token = await pageToken(page);
      assert.match(token ?? '', TOKEN);
      assert.deepEqual(await context.cookies(), [], 'a cookie was set');
      assert.equal(await page.evaluate(() => document.cookie), '');
      assert.equal(await page.evaluate(() => localStorage.length), 0, 'something in localStorage');
      assert.ok(!page.url().includes(token), 'the token is in the URL');

      // The same link in another browser: refused, and the page says why.
      const other = await browser.newContext();
      try {
        const p2 = await other.newPage();
        await p2.goto(url);
        const message = p2.locator('#signin-message');
        await message.waitFor({ state: 'visible' });
        await text(message, /already been used/);
        await text(message, new RegExp(`opzero-host open ${h.session.slice(0, 8)}`));
        assert.ok(await p2.locator('#signin').isVisible());
        assert.ok(await p2.locator('#sign-out').isHidden(), 'Sign out while signed out');
        assert.equal(await pageToken(p2), null);
        assert.deepEqual(await other.cookies(), []);
        // Signed out, it cannot send.
        assert.ok(!(await p2.locator('#composer').isVisible()) || (await p2.locator('#text').isDisabled()), 'composer usable while signed out');
      } finally {
        await other.close();
      }
      // A wrong code says so too.
      const third = await browser.newContext();
      try {
        const p3 = await third.newPage();
        await p3.goto(`${h.origin}/#code=${'0'.repeat(64)}`);
        await p3.locator('#signin-message').waitFor({ state: 'visible' });
        await text(p3.locator('#signin-message'), /not valid/);
      } finally {
        await third.close();
      }
    }));

  test('2. Enter sends exactly one channel notification; Shift+Enter makes a new line', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const box = page.getByLabel('Message', { exact: true });
      await box.click();
      await page.keyboard.type('line one');
      await page.keyboard.press('Shift+Enter');
      await page.keyboard.type('line two');
      assert.equal(await box.inputValue(), 'line one\nline two');
      assert.deepEqual(h.withMethod(CHANNEL).map((l) => l.raw), [], 'Shift+Enter sent');
      await page.keyboard.press('Enter');
      const n = await h.channelMessage();
      assert.equal(
        n.raw,
        '{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"line one\\nline two","meta":{"chat_id":"web"}}}',
      );
      await h.noLine(isChannel, 1000, 'second channel notification');
      await eventually(async () => assert.equal(await box.inputValue(), ''));
      const mine = page.locator('#log article.msg.mine');
      await count(mine, 1);
      assert.ok((await mine.textContent()).includes('line one\nline two'), await mine.textContent());
      // The Send button sends too.
      await box.fill('by the button');
      await page.getByRole('button', { name: 'Send' }).click();
      assert.deepEqual((await h.channelMessage()).json.params, { content: 'by the button', meta: { chat_id: 'web' } });
      await h.noLine(isChannel, 300, 'second channel notification');
      await count(mine, 2);
    }));

  test('3. a reply on stdin shows on the page, rendered; an edit updates it in place', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const id = await h.reply({ chat_id: 'web', text: '**Done**: ran `cargo test`\n\n- one\n- two' });
      const r = reply(page, id);
      await r.waitFor();
      await text(r.locator('.body strong'), 'Done');
      await text(r.locator('.body code'), 'cargo test');
      await count(r.locator('.body li'), 2);
      assert.ok(!(await r.locator('.body').textContent()).includes('**'), 'markdown shown raw');

      const e = await h.callTool('edit_message', { chat_id: 'web', message_id: id, text: 'Edited: *all* green' });
      assert.deepEqual(e, {
        jsonrpc: '2.0',
        id: e.id,
        result: { content: [{ type: 'text', text: `edited (id: ${id})` }], isError: false },
      });
      await text(r.locator('.body'), 'Edited: all green');
      await text(r.locator('.body em'), 'all');
      await count(page.locator('#log article.msg.reply'), 1);
    }));

  test('4. a permission prompt is a card; Allow puts the verdict on stdout; one answered elsewhere updates its card', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      h.permissionRequest({
        request_id: 'abcde',
        tool_name: 'Bash',
        description: 'List the files in the repo',
        input_preview: '{"command": "ls -la /work"}',
      });
      const c1 = card(page, 'abcde');
      await c1.waitFor();
      await attr(c1, 'data-state', 'pending');
      for (const s of ['Bash', 'List the files in the repo', '{"command": "ls -la /work"}']) {
        assert.ok((await c1.textContent()).includes(s), `card lacks ${s}: ${await c1.textContent()}`);
      }
      await c1.getByRole('button', { name: 'Allow', exact: true }).click();
      const v = await h.take((j) => j.method === VERDICT, { what: 'verdict' });
      assert.deepEqual(v.json, { jsonrpc: '2.0', method: VERDICT, params: { request_id: 'abcde', behavior: 'allow' } });
      await attr(c1, 'data-state', 'allowed');
      await count(c1.getByRole('button'), 0);
      await text(c1.locator('.outcome'), /Allowed \(remote\)/);

      // A second prompt, answered by another client with the secret.
      h.permissionRequest({ request_id: 'fghij', tool_name: 'Write', description: 'Write notes.md', input_preview: '{}' });
      const c2 = card(page, 'fghij');
      await c2.waitFor();
      await attr(c2, 'data-state', 'pending');
      const r = await h.post('/permission', { request_id: 'fghij', behavior: 'deny' });
      assert.deepEqual([r.status, r.json], [202, { ok: true }]);
      const v2 = await h.take((j) => j.method === VERDICT, { what: 'verdict' });
      assert.deepEqual(v2.json, { jsonrpc: '2.0', method: VERDICT, params: { request_id: 'fghij', behavior: 'deny' } });
      await attr(c2, 'data-state', 'denied');
      await count(c2.getByRole('button'), 0);
      await text(c2.locator('.outcome'), /Denied \(remote\)/);
      // Each verdict went out once.
      await h.noLine((j) => j.method === VERDICT, 300, 'second verdict');
      assert.equal(await c1.getAttribute('data-state'), 'allowed');
    }));

  test('4b. a prompt nobody answers in time shows as expired', (t) =>
    withHost(t, { config: '[permissions]\nexpire_after_secs = 1\n' }, async ({ h, page }) => {
      h.permissionRequest({ request_id: 'pqrst', tool_name: 'Bash', description: 'rm -rf build', input_preview: '{}' });
      const c = card(page, 'pqrst');
      await c.waitFor();
      await attr(c, 'data-state', 'expired');
      await count(c.getByRole('button'), 0);
      await text(c.locator('.outcome'), /^Expired/);
      assert.deepEqual(h.withMethod(VERDICT).map((l) => l.raw), []);
    }));

  test('5. attached files reach Claude: the notification carries their paths, with the same bytes', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const bin = binaryBytes(70_000, 5);
      await page.locator('#files').setInputFiles({ name: 'data.bin', mimeType: 'application/octet-stream', buffer: bin });
      const box = page.getByLabel('Message', { exact: true });
      await box.fill('see the attached data');
      await box.press('Enter');
      const n = (await h.channelMessage()).json;
      const p = n.params?.meta?.file_path;
      assert.equal(typeof p, 'string', JSON.stringify(n));
      assert.deepEqual(n, {
        jsonrpc: '2.0',
        method: CHANNEL,
        params: { content: 'see the attached data', meta: { chat_id: 'web', file_path: p } },
      });
      assert.match(path.basename(p), /^\d+-data\.bin$/);
      assert.ok(p.startsWith(h.home + path.sep), `${p} is not under OPZERO_HOME`);
      assert.ok((await fsp.readFile(p)).equals(bin), 'the saved file differs');
      // Sent: the box and the attachments are cleared.
      await eventually(async () => assert.equal(await box.inputValue(), ''));
      await eventually(async () => assert.equal(await page.locator('#files').evaluate((i) => i.files.length), 0));
      await h.noLine(isChannel, 500, 'second channel notification');

      // Two files at once (one an image): numbered paths and a count.
      const png = Buffer.from(
        'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
        'base64',
      );
      const txt = Buffer.from('notes, with ünïcödé\n');
      await page.getByLabel('Attach files').setInputFiles([
        { name: 'pixel.png', mimeType: 'image/png', buffer: png },
        { name: 'notes.txt', mimeType: 'text/plain', buffer: txt },
      ]);
      await box.fill('two files');
      await box.press('Enter');
      const n2 = (await h.channelMessage()).json;
      await eventually(async () => assert.equal(await box.inputValue(), ''));
      const [p1, p2] = [n2.params?.meta?.file_path_1, n2.params?.meta?.file_path_2];
      assert.deepEqual(n2.params, {
        content: 'two files',
        meta: { chat_id: 'web', file_count: '2', file_path_1: p1, file_path_2: p2 },
      });
      assert.ok((await fsp.readFile(p1)).equals(png));
      assert.ok((await fsp.readFile(p2)).equals(txt));
    }));

  test('6. a reply with a file shows a link that downloads the same bytes, fetched with the token', (t) =>
    withHost(t, {}, async ({ h, page, errors }) => {
      const token = await pageToken(page);
      const fileRequests = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname.startsWith('/files/')) fileRequests.push(r);
      });
      const bytes = binaryBytes(300_000, 11);
      const src = path.join(h.work, 'report.bin');
      await fsp.writeFile(src, bytes);
      const id = await h.reply({ chat_id: 'web', text: 'Here is the report.', files: [src] });
      const link = reply(page, id).locator('a.file');
      await count(link, 1);
      assert.match(await link.getAttribute('href'), /^\/files\/[^/]+$/);
      assert.ok((await link.textContent()).includes('report.bin'), await link.textContent());
      const before = page.url();
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      assert.equal(download.suggestedFilename(), 'report.bin');
      assert.equal(await download.failure(), null);
      assert.ok((await fsp.readFile(await download.path())).equals(bytes), 'the download differs');
      // Saved from a blob URL; the file itself came with the token in a
      // header, never in a URL.
      assert.match(download.url(), /^blob:/);
      assert.equal(fileRequests.length, 1, fileRequests.map((r) => r.url()).join(', '));
      assert.equal((await fileRequests[0].allHeaders()).authorization, `Bearer ${token}`);
      assert.ok(!fileRequests[0].url().includes(token), 'the token is in the URL');
      // The page stayed where it was, and the CSP let it all happen.
      assert.equal(page.url(), before);
      assert.equal(await page.locator('#connection').getAttribute('data-state'), 'online');
      assert.deepEqual(errors.console.filter((m) => /Content Security Policy/i.test(m)), []);
      // Without the token, the same file is refused.
      const r = await rawHttp(h.port, 'GET', await link.getAttribute('href'));
      assert.equal(r.status, 403);
    }));

  test('7. cut the event stream: offline shows; replies made meanwhile show once after the reconnect', (t) =>
    withHost(t, { proxy: true }, async ({ h, page, proxy }) => {
      const conn = page.locator('#connection');
      const a = await h.reply({ chat_id: 'web', text: 'before the cut' });
      await reply(page, a).waitFor();

      // The host hands a reply to the old stream, which never reaches the
      // page (a dying connection), then the connection drops.
      proxy.blackhole();
      const b = await h.reply({ chat_id: 'web', text: 'lost on the dying stream' });
      await eventually(() => assert.ok(proxy.swallowed.includes('lost on the dying stream'), 'the host did not send it'));
      proxy.cut();
      await attr(conn, 'data-state', 'offline');

      // A reply while nobody is connected (or before the host noticed).
      const r = await h.callTool('reply', { chat_id: 'web', text: 'made while offline' });
      const m = /^(?:sent \(id: (\d+)\)|queued \(id: (\d+); no client connected\))$/.exec(r.result?.content?.[0]?.text ?? '');
      assert.ok(m && r.result.isError === false, JSON.stringify(r));
      const c = Number(m[1] ?? m[2]);
      await sleep(1000);
      assert.equal(await conn.getAttribute('data-state'), 'offline', 'online while the proxy refuses');
      await count(reply(page, b), 0);
      await count(reply(page, c), 0);

      proxy.restore();
      await attr(conn, 'data-state', 'online');
      await count(reply(page, b), 1);
      await count(reply(page, c), 1);
      await sleep(1000);
      const all = page.locator('#log article.msg.reply');
      assert.deepEqual(
        await all.evaluateAll((els) => els.map((e) => [e.dataset.eventId, e.querySelector('.body').textContent])),
        [
          [String(a), 'before the cut'],
          [String(b), 'lost on the dying stream'],
          [String(c), 'made while offline'],
        ],
      );
    }));

  test('8. <img onerror> renders as text, from Claude and as typed', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      await page.evaluate(() => (window.__pwned = 0));
      const evil = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [x](javascript:window.__pwned=3)';
      const id = await h.reply({ chat_id: 'web', text: evil });
      const r = reply(page, id);
      await r.waitFor();
      await sendTyped(h, page, evil);
      const mine = page.locator('#log article.msg.mine');
      await count(mine, 1);
      assert.equal(await page.locator('#log img, #log script, #log iframe').count(), 0, 'markup from a message reached the DOM');
      assert.equal(await page.locator('#log a[href^="javascript:" i]').count(), 0, 'a javascript: link');
      assert.ok((await r.locator('.body').innerText()).includes('<img src=x onerror="window.__pwned=1">'), await r.innerText());
      assert.ok((await mine.innerText()).includes('<img src=x onerror="window.__pwned=1">'), await mine.innerText());
      assert.ok(await r.getByText('<img src=x', { exact: false }).isVisible());
      await sleep(300);
      assert.equal(await page.evaluate(() => window.__pwned), 0);
    }));

  test('9. the token from a foreign Origin gets 403', (t) =>
    withHost(t, {}, async ({ h, page, context }) => {
      const token = await pageToken(page);
      assert.match(token ?? '', TOKEN);
      const Authorization = `Bearer ${token}`;
      const inject = (Origin, content, extra = {}) =>
        rawHttp(h.port, 'POST', '/inject', {
          headers: { Authorization, Origin, 'Content-Type': 'application/json', ...extra },
          body: JSON.stringify({ content, chat_id: 'web' }),
        });
      const refused = { error: 'cross-origin request refused' };
      // Another site, another port, another name or scheme for this one: not the page's origin.
      for (const origin of ['http://evil.example', `http://127.0.0.1:${h.port + 1}`, `http://localhost:${h.port}`, `https://127.0.0.1:${h.port}`, 'null']) {
        const r = await inject(origin, `from ${origin}`);
        assert.deepEqual([origin, r.status, r.json], [origin, 403, refused]);
      }
      // The page's own Origin, but the browser says the request is cross-site.
      let r = await inject(h.origin, 'cross-site', { 'Sec-Fetch-Site': 'cross-site' });
      assert.deepEqual([r.status, r.json], [403, refused]);
      // Through the browser's own request API.
      const viaBrowser = await context.request.post(`${h.origin}/inject`, {
        headers: { Origin: 'http://evil.example', Authorization },
        data: { content: 'from evil, via the browser', chat_id: 'web' },
      });
      assert.deepEqual([viaBrowser.status(), await viaBrowser.json()], [403, refused]);
      for (const p of ['/events', '/permissions', '/files/whatever']) {
        r = await rawHttp(h.port, 'GET', p, { headers: { Authorization, Origin: 'http://evil.example' } });
        assert.deepEqual([p, r.status, r.json], [p, 403, refused]);
      }
      for (const [p, body] of [['/permission', '{"request_id":"abcde","behavior":"allow"}'], ['/logout', '']]) {
        r = await rawHttp(h.port, 'POST', p, {
          headers: { Authorization, Origin: 'http://evil.example', 'Content-Type': 'application/json' },
          body,
        });
        assert.deepEqual([p, r.status, r.json], [p, 403, refused]);
      }
      // The same token from the page's own origin works: the refusals were
      // the origin's doing (and the refused /logout ended nothing).
      r = await inject(h.origin, 'from the page');
      assert.equal(r.status, 202, r.body);
      assert.match(r.json?.message_id ?? '', /^\S+$/, r.body);
      assert.deepEqual(r.json, { ok: true, message_id: r.json.message_id });
      const n = await h.channelMessage();
      assert.equal(n.raw, '{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"from the page","meta":{"chat_id":"web"}}}');
      await h.noLine(isChannel, 300, 'channel notification');
      assert.deepEqual(h.withMethod(CHANNEL).map((l) => l.json.params.content), ['from the page']);
      assert.deepEqual(h.withMethod(VERDICT), []);
      assert.equal(await page.locator('#connection').getAttribute('data-state'), 'online');
    }));

  test('10. #claude-state follows the status events', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const s = page.locator('#claude-state');
      await attr(s, 'data-state', 'unknown');
      await text(s, 'Claude: unknown');
      await h.setClaudeStatus('busy');
      await attr(s, 'data-state', 'busy');
      await text(s, 'Claude is working…');
      await h.setClaudeStatus('idle');
      await attr(s, 'data-state', 'idle');
      await text(s, 'Claude is idle');
      await h.setClaudeStatus('busy');
      await attr(s, 'data-state', 'busy');
    }));

  test('11. at 390x844 the composer and the last message are visible and usable (phone screenshot)', (t) =>
    withHost(
      t,
      { claude: 'idle', config: PATIENT, viewport: { width: 390, height: 844 }, contextOptions: { isMobile: true, hasTouch: true, deviceScaleFactor: 1 } },
      async ({ h, page }) => {
        await conversation(h, page, h.work);
        const last = await h.reply({ chat_id: 'web', text: 'On it: editing `.ci/run` once you allow it.' });
        await reply(page, last).waitFor();
        await sleep(300); // let scrolling settle
        const inView = async (locator, what) => {
          const b = await locator.boundingBox();
          assert.ok(b, `${what} is not rendered`);
          assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.width <= 390 + 0.5 && b.y + b.height <= 844 + 0.5, `${what} is outside the viewport: ${JSON.stringify(b)}`);
        };
        await inView(reply(page, last), 'the last message');
        await inView(page.getByLabel('Message', { exact: true }), 'the message box');
        await inView(page.getByRole('button', { name: 'Send' }), 'the Send button');
        await inView(page.getByLabel('Attach files'), 'the attach control');
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(overflow <= 390, `the page is ${overflow}px wide at 390px`);
        await screenshot(page, 'phone-390x844');
        // Usable: the card's buttons can be tapped...
        await card(page, 'kqmzp').getByRole('button', { name: 'Allow', exact: true }).tap();
        assert.deepEqual((await h.take((j) => j.method === VERDICT)).json.params, { request_id: 'kqmzp', behavior: 'allow' });
        await attr(card(page, 'kqmzp'), 'data-state', 'allowed');
        // ...and so can the box and Send; what was sent then shows.
        await page.getByLabel('Message', { exact: true }).tap();
        await page.keyboard.type('Allowed it, thanks');
        await page.getByRole('button', { name: 'Send' }).tap();
        const n = await h.channelMessage();
        assert.deepEqual(n.json.params, { content: 'Allowed it, thanks', meta: { chat_id: 'web' } });
        await deliver(h, n);
        const sent = page.locator('#log article.msg.mine', { hasText: 'Allowed it, thanks' });
        await count(sent, 1);
        await marked(sent, 'seen', 'seen by Claude');
        await sleep(300);
        await inView(sent, 'the message just sent');
        await inView(page.getByLabel('Message', { exact: true }), 'the message box');
      },
    ));

  test('12. desktop screenshot (1280x800) with a realistic conversation', (t) =>
    withHost(t, { claude: 'idle', config: PATIENT, viewport: { width: 1280, height: 800 } }, async ({ h, page }) => {
      await conversation(h, page, h.work);
      await sleep(300);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(overflow <= 1280, `the page is ${overflow}px wide`);
      await screenshot(page, 'desktop-1280x800');
    }));

  test('13. the conversation reads in the order it happened, whatever the browser\'s clock says', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      // A phone's clock is rarely the computer's to the second; here it is
      // two minutes ahead, then two minutes behind.
      await page.clock.setSystemTime(Date.now() + 120_000);
      await sendTyped(h, page, 'first question');
      const a = await h.reply({ chat_id: 'web', text: 'first answer' });
      await reply(page, a).waitFor();
      await page.clock.setSystemTime(Date.now() - 120_000);
      await sendTyped(h, page, 'second question');
      const b = await h.reply({ chat_id: 'web', text: 'second answer' });
      await reply(page, b).waitFor();
      await count(page.locator('#log article.msg.mine'), 2);
      assert.deepEqual(await order(page, ['first question', 'second question']), ['me: first question', `claude: ${a}`, 'me: second question', `claude: ${b}`]);
    }));

  test('14. a reload shows the conversation again, in order, each message once', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      await sendTyped(h, page, 'before any reply');
      const a = await h.reply({ chat_id: 'web', text: 'first answer' });
      await reply(page, a).waitFor();
      await sendTyped(h, page, 'after the first answer');
      const b = await h.reply({ chat_id: 'web', text: 'second answer' });
      await reply(page, b).waitFor();
      await sendTyped(h, page, 'the last word');
      h.permissionRequest({ request_id: 'rlxyz', tool_name: 'Bash', description: 'list files', input_preview: 'ls' });
      await card(page, 'rlxyz').waitFor();
      const sent = ['before any reply', 'after the first answer', 'the last word'];
      const want = ['me: before any reply', `claude: ${a}`, 'me: after the first answer', `claude: ${b}`, 'me: the last word', 'card: rlxyz'];
      assert.deepEqual(await order(page, sent), want);
      await page.reload();
      await reply(page, b).waitFor();
      await card(page, 'rlxyz').waitFor();
      await eventually(async () => assert.deepEqual(await order(page, sent), want));
      await sleep(700);
      assert.deepEqual(await order(page, sent), want, 'something came twice, or late');
      await h.noLine(isChannel, 300, 'a notification from the reload');
    }));

  test('a refused send shows #send-error and keeps the text', (t) =>
    withHost(t, { config: '[limits]\nmax_content_chars = 10\n' }, async ({ h, page }) => {
      const box = page.getByLabel('Message', { exact: true });
      await box.fill('this is longer than ten characters');
      await box.press('Enter');
      const alert = page.locator('#send-error');
      await alert.waitFor({ state: 'visible' });
      assert.equal(await alert.getAttribute('role'), 'alert');
      await text(alert, /content is 34 characters; the limit is 10/);
      assert.equal(await box.inputValue(), 'this is longer than ten characters');
      await count(page.locator('#log article.msg.mine'), 0);
      // A good one then goes, and the error goes away.
      await sendTyped(h, page, 'short');
      await alert.waitFor({ state: 'hidden' });
      await h.noLine(isChannel, 300, 'channel notification');
    }));

  test('22. open hands the browser a private page, not the link: following it signs in, and the page is gone', (t) =>
    withHost(t, { signedIn: false }, async (env) => {
      const { h } = env;
      // A "browser" that only records what it was handed.
      const handed = path.join(h.home, 'handed');
      const fake = path.join(h.home, 'fake-browser');
      await fsp.writeFile(fake, `#!/bin/sh\nprintf '%s' "$1" > '${handed}'\n`, { mode: 0o755 });
      const { stdout } = await promisify(execFile)(BIN, ['open', h.session.slice(0, 8)], {
        env: { ...process.env, HOME: h.home, OPZERO_HOME: h.home, BROWSER: fake },
        timeout: WAIT,
      });
      const code = stdout.trim().split('/#code=')[1];
      assert.match(code ?? '', /^[0-9a-f]{64}$/, `open printed ${stdout}`);
      await eventually(async () => assert.ok(fs.existsSync(handed)));
      const page = (await fsp.readFile(handed, 'utf8')).trim();
      assert.ok(!page.includes(code), 'the browser was handed the code');
      assert.equal((await fsp.stat(page)).mode & 0o777, 0o600);
      const context = await browser.newContext();
      env.contexts.push(context);
      const tab = await context.newPage();
      env.page = tab;
      env.errors = watchErrors(tab);
      await tab.goto(`file://${page}`);
      await tab.waitForURL(`${h.origin}/`);
      await tab.locator('#connection[data-state="online"]').waitFor({ state: 'attached' });
      assert.match((await pageToken(tab)) ?? '', TOKEN);
      await eventually(async () => assert.ok(!fs.existsSync(page), 'the page outlived its use'));
    }));

  test('15. a link to another local server gets neither the token nor a cookie, and nothing it got works at the bridge', (t) =>
    withHost(t, {}, async ({ h, page, context }) => {
      const other = await Recorder.start();
      try {
        const token = await pageToken(page);
        assert.match(token ?? '', TOKEN);
        const target = `${other.origin}/landing?from=reply`;
        const id = await h.reply({ chat_id: 'web', text: `The preview is at [the local preview](${target}).` });
        const a = reply(page, id).getByRole('link', { name: 'the local preview' });
        await attr(a, 'href', target);
        const [opened] = await Promise.all([context.waitForEvent('page'), a.click()]);
        await opened.waitForLoadState('domcontentloaded');
        await eventually(() => assert.ok(other.requests.some((r) => r.url === '/landing?from=reply'), JSON.stringify(other.requests)));
        await opened.close();
        // Nothing it got (the page, and its favicon, say) holds the token,
        // a cookie, or where the link was clicked (a favicon's Referer is
        // the other server's own page).
        for (const r of other.requests) {
          const all = [r.method, r.url, ...r.rawHeaders].join('\n');
          assert.ok(!all.includes(token), `the token reached the other server:\n${all}`);
          for (const name of ['cookie', 'authorization']) assert.equal(r.headers[name], undefined, `${name} sent:\n${all}`);
          if (r.headers.referer !== undefined) assert.ok(r.headers.referer.startsWith(`${other.origin}/`), `referer sent:\n${all}`);
        }
        const landing = other.requests.find((r) => r.url === '/landing?from=reply');
        assert.equal(landing.headers.referer, undefined, 'the chat page sent its address');
        assert.deepEqual(await context.cookies(), []);

        // What it got, replayed to the bridge as if it came from the page
        // (hop-by-hop headers aside): refused. Once as the browser sent it,
        // once without the Sec-Fetch headers an attacker would leave out.
        const got = landing;
        for (const dropSecFetch of [false, true]) {
          const headers = {};
          for (let i = 0; i < got.rawHeaders.length; i += 2) {
            const name = got.rawHeaders[i];
            if (/^(host|origin|connection|keep-alive|content-length|transfer-encoding)$/i.test(name)) continue;
            if (dropSecFetch && /^sec-fetch-/i.test(name)) continue;
            headers[name] = got.rawHeaders[i + 1];
          }
          Object.assign(headers, { Host: `127.0.0.1:${h.port}`, Origin: h.origin });
          const inject = await rawHttp(h.port, 'POST', '/inject', {
            headers: { ...headers, 'Content-Type': 'application/json' },
            body: JSON.stringify({ content: 'replayed', chat_id: 'web' }),
          });
          assert.equal(inject.status, 403, `POST /inject with ${JSON.stringify(headers)}: ${inject.body}`);
          const perms = await rawHttp(h.port, 'GET', '/permissions', { headers });
          assert.equal(perms.status, 403, `GET /permissions with ${JSON.stringify(headers)}: ${perms.body}`);
        }
        await h.noLine(isChannel, 300, 'a replayed message');
        // The page itself is still signed in.
        await sendTyped(h, page, 'still here');
      } finally {
        await other.stop();
      }
    }));

  test('16. signing in to a second session in the same browser keeps the first signed in', (t) =>
    withHost(t, {}, async ({ h, page, context }) => {
      const h2 = await Host.start();
      try {
        const second = await signInPage(context, h2);
        assert.notEqual(h2.port, h.port);
        const [t1, t2] = [await pageToken(page), await pageToken(second.page)];
        assert.match(t1 ?? '', TOKEN);
        assert.match(t2 ?? '', TOKEN);
        assert.notEqual(t1, t2);
        // Each page talks to its own host.
        await sendTyped(h, page, 'to the first session');
        await sendTyped(h2, second.page, 'to the second session');
        const r1 = await h.reply({ chat_id: 'web', text: 'from the first host' });
        await reply(page, r1).waitFor();
        // A reload of the first is still signed in, and it still sends.
        await page.reload();
        await signedIn(page);
        assert.equal(await pageToken(page), t1);
        await reply(page, r1).waitFor();
        await sendTyped(h, page, 'after the reload');
        await h.noLine(isChannel, 300, 'channel notification');
        await h2.noLine(isChannel, 0, 'channel notification');
        assert.deepEqual(h.withMethod(CHANNEL).map((l) => l.json.params.content), ['to the first session', 'after the reload']);
        assert.deepEqual(h2.withMethod(CHANNEL).map((l) => l.json.params.content), ['to the second session']);
        assert.deepEqual(second.errors.uncaught, []);
      } finally {
        await h2.stop();
      }
    }));

  test('17. Sign out ends the token at the host, stops the stream and shows the signed-out view', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const token = await pageToken(page);
      assert.match(token ?? '', TOKEN);
      await sendTyped(h, page, 'before signing out');
      const streams = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname === '/events') streams.push(r);
      });
      const ended = page.waitForEvent('requestfailed', (r) => new URL(r.url()).pathname === '/events');
      await page.getByRole('button', { name: 'Sign out' }).click();
      const message = page.locator('#signin-message');
      await message.waitFor({ state: 'visible' });
      await text(message, /^You are signed out\./);
      await text(message, new RegExp(`opzero-host open ${h.session.slice(0, 8)}`));
      assert.ok(await page.locator('#sign-out').isHidden());
      assert.ok(await page.locator('#composer').isHidden());
      assert.equal(await pageToken(page), null);
      // The event stream was stopped, and is not started again.
      await ended;
      assert.equal(await page.locator('#connection').getAttribute('data-state'), 'offline');

      // The captured token, from the page's own origin: refused.
      const headers = { Authorization: `Bearer ${token}`, Origin: h.origin };
      const perms = await rawHttp(h.port, 'GET', '/permissions', { headers });
      assert.deepEqual([perms.status, perms.json], [403, { error: 'forbidden' }]);
      const inject = await rawHttp(h.port, 'POST', '/inject', {
        headers: { ...headers, 'Content-Type': 'application/json' },
        body: JSON.stringify({ content: 'after signing out', chat_id: 'web' }),
      });
      assert.deepEqual([inject.status, inject.json], [403, { error: 'forbidden' }]);
      await h.noLine(isChannel, 300, 'channel notification');
      await sleep(3500); // longer than the page's longest reconnect wait
      assert.equal(streams.length, 0, 'the stream started again');

      // A reload stays signed out, and this tab forgot the conversation.
      await page.reload();
      await message.waitFor({ state: 'visible' });
      await text(message, /not signed in/);
      assert.equal(await page.locator('#log article').count(), 0);
    }));

  test('18. a link whose label is another address shows the address it goes to', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const id = await h.reply({
        chat_id: 'web',
        text:
          'Log in at [https://good.example/](https://evil.example/), read [docs](https://x.example/), ' +
          'see [https://Same.example](https://same.example/), [www.good.example](https://evil.example/www), ' +
          '[good.example/login](https://evil.example/bare), [log in at paypal.com](https://evil.example/words) ' +
          'and [the notes.](https://x.example/notes)',
      });
      const links = reply(page, id).locator('.body a');
      await count(links, 7);
      assert.deepEqual(await links.evaluateAll((els) => els.map((a) => [a.textContent, a.getAttribute('href')])), [
        ['https://evil.example/', 'https://evil.example/'],
        ['docs', 'https://x.example/'],
        ['https://Same.example', 'https://same.example/'],
        ['https://evil.example/www', 'https://evil.example/www'],
        ['https://evil.example/bare', 'https://evil.example/bare'],
        ['https://evil.example/words', 'https://evil.example/words'],
        ['the notes.', 'https://x.example/notes'],
      ]);
    }));

  test('19. the stream parser: CRLF, CR, comments, ids, and chunks split anywhere', (t) =>
    withHost(t, {}, async ({ page }) => {
      // The page's own parser, fed one stream cut into three chunks at
      // every pair of places (in a CRLF, in a UTF-8 character, ...).
      const result = await page.evaluate(() => {
        const stream =
          '\uFEFF: connected\r\nid: 1\r\ndata: {"a":"é€😀"}\r\n\r\n: ping\rid: 2\rdata: x\rdata:  y\r\r' +
          'id:3\ndata:z\n\nevent: other\nid: 4\ndata: not a message\n\ndata: no id\n\nid\ndata\n\n';
        const bytes = new TextEncoder().encode(stream);
        const parse = (chunks) => {
          const got = [];
          const feed = sseParser((id, data) => got.push([id, data]));
          for (const c of chunks) feed(c);
          return JSON.stringify(got);
        };
        const whole = parse([bytes]);
        for (let i = 0; i <= bytes.length; i++) {
          for (let j = i; j <= bytes.length; j++) {
            const split = parse([bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)]);
            if (split !== whole) return { whole, split, i, j };
          }
        }
        return { whole };
      });
      assert.equal(result.split, undefined, `split at ${result.i}, ${result.j}: ${result.split}`);
      assert.deepEqual(JSON.parse(result.whole), [
        ['1', '{"a":"é€😀"}'],
        ['2', 'x\n y'],
        ['3', 'z'],
        ['4', 'no id'],
        ['', ''],
      ]);
    }));

  test('20. a stream sent with CRLF line ends shows each event once, and resumes after the last', (t) =>
    withHost(t, {}, async ({ page }) => {
      const ts = Date.now();
      const ev = (id, text) => `id: ${id}\r\ndata: ${JSON.stringify({ type: 'reply', chat_id: 'web', text, ts })}\r\n\r\n`;
      const asked = [];
      await page.route('**/events*', async (route) => {
        const r = route.request();
        asked.push({ url: r.url(), headers: await r.allHeaders() });
        // The whole stream at once, then its end: the page must go on.
        await route.fulfill({ status: 200, contentType: 'text/event-stream', body: ': connected\r\n\r\n' + ev(901, 'one') + ev(902, 'two') });
      });
      await page.reload();
      await reply(page, 901).waitFor();
      await reply(page, 902).waitFor();
      // It reconnects after the end, asking for what follows 902.
      await eventually(() => assert.ok(asked.length >= 2, `${asked.length} requests`));
      const again = asked[asked.length - 1];
      assert.equal(new URL(again.url).searchParams.get('since'), '902');
      assert.equal(again.headers['last-event-id'], '902');
      assert.match(again.headers.authorization ?? '', /^Bearer [0-9a-f]{64}$/);
      await count(reply(page, 901), 1);
      await count(reply(page, 902), 1);
      assert.deepEqual(await page.locator('#log article.msg.reply .body').allTextContents(), ['one', 'two']);
    }));

  test('21. a token the host does not know (it restarted, say) shows the signed-out view and is dropped', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      await page.evaluate(() => sessionStorage.setItem('opzero-token', '0'.repeat(64)));
      const streams = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname === '/events') streams.push(r);
      });
      await page.reload();
      const message = page.locator('#signin-message');
      await message.waitFor({ state: 'visible' });
      await text(message, /^You are signed out/);
      await text(message, new RegExp(`opzero-host open ${h.session.slice(0, 8)}`));
      assert.equal(await pageToken(page), null);
      assert.ok(await page.locator('#sign-out').isHidden());
      assert.ok(await page.locator('#composer').isHidden());
      assert.equal(streams.length, 0, 'the stream started with a refused token');
    }));

  // Receipts and the mirror: the host reads Claude Code's transcript, which
  // the harness writes as Claude Code would (Transcript).

  test('23. a sent message is marked sent, then queued, then seen by Claude; another client\'s receipts change nothing', (t) =>
    withHost(t, { claude: 'idle', config: PATIENT }, async ({ h, page }) => {
      const posted = page.waitForResponse((r) => new URL(r.url()).pathname === '/inject');
      const n = await sendTyped(h, page, 'Is the build green? </channel> <b>not bold</b>');
      const answer = await posted;
      const id = answer.request().headers()['idempotency-key'];
      assert.match(id ?? '', /^web-[0-9a-f]{32}$/);
      assert.deepEqual([answer.status(), await answer.json()], [202, { ok: true, message_id: id }]);
      const m = mineMsg(page, id);
      await count(m, 1);
      await marked(m, 'sent', 'sent');
      assert.ok(await m.locator('.problem').isHidden());
      assert.equal(await m.getByRole('button').count(), 0);

      await h.transcript.enqueue(n.json);
      await marked(m, 'queued', 'queued');
      await h.transcript.toModel(n.json);
      await marked(m, 'seen', 'seen by Claude');
      assert.equal(await page.locator('#log b').count(), 0, 'markup from a message reached the DOM');

      // Another client's message, taken and seen: its receipts are not this
      // page's to show.
      const other = await h.post('/inject', { content: 'from another client', chat_id: 'web' });
      assert.equal(other.status, 202, other.body);
      const n2 = await h.channelMessage();
      await deliver(h, n2);
      await h.event((e) => e.type === 'receipt' && e.message_id === other.json.message_id && e.state === 'seen', { what: 'the other client\'s seen receipt' });
      await sleep(300);
      await count(page.locator('#log article.msg.mine'), 1);
      await count(page.locator('#log > *'), 1);
      await marked(m, 'seen', 'seen by Claude');

      // A reload shows the message again, with its mark.
      await page.reload();
      await signedIn(page);
      await count(mineMsg(page, id), 1);
      await marked(mineMsg(page, id), 'seen', 'seen by Claude');
      await sleep(700);
      await count(page.locator('#log > *'), 1);
    }));

  test('24. receipts that come before the answer to the send still move the mark on', (t) =>
    withHost(t, { claude: 'idle', config: PATIENT }, async ({ h, page }) => {
      // The host's answer to the send is held back until the message is seen.
      let release;
      const held = new Promise((resolve) => (release = resolve));
      await page.route('**/inject', async (route) => {
        const response = await route.fetch();
        await held;
        await route.fulfill({ response });
      });
      const box = page.getByLabel('Message', { exact: true });
      await box.fill('a quick one');
      await box.press('Enter');
      const n = await h.channelMessage();
      const m = page.locator('#log article.msg.mine');
      await count(m, 1);
      await attr(m, 'data-state', 'sending');
      await deliver(h, n);
      await marked(m, 'seen', 'seen by Claude');
      release();
      await eventually(async () => assert.equal(await box.inputValue(), ''));
      await sleep(500);
      await count(m, 1);
      await marked(m, 'seen', 'seen by Claude');
      assert.ok(await page.locator('#send-error').isHidden());
    }));

  test('25. a message Claude Code did not take is marked not delivered, with the reason; Retry sends it again with the same id', (t) =>
    withHost(t, { claude: 'idle', config: IMPATIENT }, async ({ h, page }) => {
      const content = 'Did this reach you?';
      const n = await sendTyped(h, page, content);
      const m = page.locator('#log article.msg.mine');
      await count(m, 1);
      const id = await m.getAttribute('data-message-id');
      // Nothing in the transcript: within the grace, the host says so.
      const undelivered = await h.event((e) => e.type === 'receipt' && e.message_id === id && e.state === 'undelivered', { what: 'undelivered' });
      assert.equal(typeof undelivered.reason, 'string');
      await marked(m, 'undelivered', 'not delivered');
      const problem = m.locator('.problem');
      await problem.waitFor({ state: 'visible' });
      // The reason, as text (its `code` spans as code).
      await text(problem, undelivered.reason.replace(/`/g, '') + 'Retry');
      assert.equal(await problem.locator('code').count(), (undelivered.reason.match(/`/g) ?? []).length / 2);
      assert.equal(await page.getByLabel('Message', { exact: true }).inputValue(), '', 'the text came back to the box');

      // Retry: the same content, the same id, taken.
      const retry = m.getByRole('button', { name: 'Retry' });
      const [request] = await Promise.all([
        page.waitForRequest((r) => new URL(r.url()).pathname === '/inject' && r.method() === 'POST'),
        retry.click(),
      ]);
      const again = await h.channelMessage();
      // Claude Code takes it at once this time.
      await h.transcript.enqueue(again.json);
      assert.deepEqual(again.json, n.json);
      assert.equal(request.headers()['idempotency-key'], id);
      assert.deepEqual(JSON.parse(request.postData()), { content, chat_id: 'web' });
      const response = await request.response();
      assert.deepEqual([response.status(), await response.json()], [202, { ok: true, message_id: id }]);
      await marked(m, 'queued', 'queued');
      await h.transcript.toModel(again.json);
      await marked(m, 'seen', 'seen by Claude');
      await problem.waitFor({ state: 'hidden' });
      await count(m.getByRole('button'), 0);
      await count(m, 1);
      assert.ok(await page.locator('#send-error').isHidden());
      await h.noLine(isChannel, 300, 'a third channel notification');
    }));

  test('25b. after a reload a message not delivered still says so, and its Retry still works', (t) =>
    withHost(t, { claude: 'idle', config: IMPATIENT }, async ({ h, page }) => {
      const n = await sendTyped(h, page, 'before the reload');
      const m = page.locator('#log article.msg.mine');
      const id = await m.getAttribute('data-message-id');
      await marked(m, 'undelivered', 'not delivered');
      await page.reload();
      await signedIn(page);
      await count(mineMsg(page, id), 1);
      await marked(mineMsg(page, id), 'undelivered', 'not delivered');
      const [request] = await Promise.all([
        page.waitForRequest((r) => new URL(r.url()).pathname === '/inject' && r.method() === 'POST'),
        mineMsg(page, id).getByRole('button', { name: 'Retry' }).click(),
      ]);
      const again = await h.channelMessage();
      await deliver(h, again);
      assert.deepEqual(again.json, n.json);
      assert.equal(request.headers()['idempotency-key'], id);
      assert.equal((await request.response()).status(), 202);
      await marked(mineMsg(page, id), 'seen', 'seen by Claude');
      // And a reload after that shows it seen, once.
      await page.reload();
      await signedIn(page);
      await marked(mineMsg(page, id), 'seen', 'seen by Claude');
      await sleep(700);
      await count(page.locator('#log > *'), 1);
    }));

  test('26. Claude\'s answer that stayed in the terminal shows as Claude\'s, marked said in the terminal', (t) =>
    withHost(t, { claude: 'idle', config: PATIENT }, async ({ h, page }) => {
      const n = await sendTyped(h, page, 'What did the tests say?');
      const id = await page.locator('#log article.msg.mine').getAttribute('data-message-id');
      await deliver(h, n);
      await h.transcript.say('All **green**: 42 passed.\n\n- unit\n- browser <img src=x onerror="window.__pwned=1">');
      await h.transcript.endTurn();
      const said = page.locator('#log article.msg.reply.terminal');
      await count(said, 1);
      assert.equal(await said.getAttribute('data-answers'), id);
      assert.equal(await said.getAttribute('data-chat-id'), 'web');
      await text(said.locator('.body strong'), 'green');
      await count(said.locator('.body li'), 2);
      await text(said.locator('.body li').nth(1), 'browser <img src=x onerror="window.__pwned=1">');
      assert.equal(await page.locator('#log img').count(), 0, 'markup from a message reached the DOM');
      await text(said.locator('.meta'), /^Claude · [^·]+ · said in the terminal$/);
      await text(said.locator('.said'), 'said in the terminal');
      // Below the message it answers.
      const sent = ['What did the tests say?'];
      const eventId = await said.getAttribute('data-event-id');
      assert.deepEqual(await order(page, sent), ['me: What did the tests say?', `claude: ${eventId}`]);
      await marked(page.locator('#log article.msg.mine'), 'seen', 'seen by Claude');
    }));

  test('27. what Claude is doing shows under the busy indicator, and goes when it is idle', (t) =>
    withHost(t, { claude: 'idle', config: PATIENT }, async ({ h, page }) => {
      const state = page.locator('#claude-state');
      const activity = page.locator('#activity');
      await attr(state, 'data-state', 'idle');
      assert.ok(await activity.isHidden());
      await h.setClaudeStatus('busy');
      await attr(state, 'data-state', 'busy');
      await h.transcript.tool('Bash', { command: 'cargo test', description: 'run the tests' });
      await activity.waitFor({ state: 'visible' });
      await text(activity, 'Bash: run the tests');
      await text(state, 'Claude is working…');
      const [s, a] = [await state.boundingBox(), await activity.boundingBox()];
      assert.ok(a.y >= s.y + s.height - 1 && Math.abs(a.x - s.x) < 2, `not under the indicator: ${JSON.stringify({ s, a })}`);
      // The latest one.
      await h.transcript.tool('Read', { file_path: '/work/README.md' });
      await text(activity, 'Read: /work/README.md');
      await h.setClaudeStatus('idle');
      await attr(state, 'data-state', 'idle');
      await activity.waitFor({ state: 'hidden' });
      await text(activity, '');
    }));

  test('28. a config change that does not load shows in the conversation with its errors, and so does the fix', (t) =>
    withHost(t, { config: '[limits]\nmax_files = 10\n' }, async ({ h, page }) => {
      // Saved as an editor saves: a new file renamed over the old.
      const save = async (text) => {
        await fsp.writeFile(h.configPath + '.new', text);
        await fsp.rename(h.configPath + '.new', h.configPath);
      };
      await save('[limits]\nmax_files = "ten"\n');
      const broken = page.locator('#log .note.config[data-state="error"]');
      await broken.waitFor();
      assert.equal(await broken.getAttribute('role'), 'alert');
      await text(broken.locator('p'), "A change to the host's config did not load; the filters before it still run:");
      await text(broken.locator('li'), new RegExp(`^${h.configPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:2:13: limits.max_files: expected an integer, found string$`));
      await save('[limits]\nmax_files = 10\n');
      await text(page.locator('#log .note.config[data-state="ok"]'), "The host's config reloaded (no filters).");
      assert.equal(await page.locator('#log .note.config').count(), 2);
    }));
});
