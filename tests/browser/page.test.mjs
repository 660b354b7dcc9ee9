// The built-in chat page in a real browser (headless Chromium from the
// system), against the real opzero-host binary whose stdin and stdout play
// Claude Code. Run: npm ci --prefix tests/browser && node --test tests/browser/
// (after cargo build -p opzero-host). Screenshots go to target/browser-tests/.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';

import {
  Host,
  OUT,
  Proxy,
  WAIT,
  binaryBytes,
  eventually,
  isSocket,
  launchBrowser,
  rawHttp,
  screenshot,
  signIn,
  sleep,
} from './harness.mjs';

const CHANNEL = 'notifications/claude/channel';
const VERDICT = 'notifications/claude/channel/permission';
const isChannel = (j) => j.method === CHANNEL;

let browser;
before(async () => {
  // What an earlier run's failures left.
  await fsp.mkdir(OUT, { recursive: true });
  for (const f of await fsp.readdir(OUT)) {
    if (f.startsWith('failure-')) await fsp.rm(path.join(OUT, f), { force: true });
  }
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/// Runs `body` with its own host (and proxy), signed in unless `signedIn` is
/// false; on a failure adds what the host printed and saves what the page
/// showed; always cleans up. Fails on any uncaught exception in the page.
async function withHost(t, opts, body) {
  const { config = '', proxy: wantProxy = false, signedIn = true, viewport, contextOptions } = opts;
  const proxy = wantProxy ? await Proxy.start() : undefined;
  const allowed = proxy ? `[bridge]\nallowed_hosts = ["127.0.0.1:${proxy.port}"]\n` : '';
  const h = await Host.start({ config: allowed + config });
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
    if (env.page) {
      const name = 'failure-' + t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      await screenshot(env.page, name).catch(() => {});
      e.message += `\n(page screenshot: ${path.join(OUT, name + '.png')})`;
      e.message += `\npage errors: ${JSON.stringify(env.errors)}`;
    }
    e.message += `\n${h.describe()}`;
    throw e;
  } finally {
    for (const c of env.contexts) await c.close().catch(() => {});
    await proxy?.stop();
    await h.stop();
  }
}

const reply = (page, id) => page.locator(`#log article.msg.reply[data-event-id="${id}"]`);
const card = (page, id) => page.locator(`#log article.card.permission[data-request-id="${id}"]`);

/// Waits until `locator` matches exactly `n` elements.
async function count(locator, n, timeout = WAIT) {
  await eventually(async () => assert.equal(await locator.count(), n), { timeout });
}

async function attr(locator, name, value) {
  await eventually(async () => assert.equal(await locator.getAttribute(name), value));
}

async function text(locator, expected) {
  await eventually(async () => {
    const t = (await locator.textContent()) ?? '';
    if (expected instanceof RegExp) assert.match(t, expected);
    else assert.equal(t.trim(), expected);
  });
}

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
  await sendTyped(h, page, 'The CI run failed again. Can you look at why, and fix it if it is simple?');
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
  await sendTyped(h, page, 'Yes please, go ahead.');
  await h.setClaudeStatus('busy');
  h.permissionRequest({
    request_id: 'kqmzp',
    tool_name: 'Edit',
    description: 'Add the chromium install to .ci/run',
    input_preview: '{"file_path": ".ci/run", "old_string": "apt-get install -y tmux", "new_string": "apt-get install -y tmux chromium"}',
  });
  await card(page, 'kqmzp').waitFor();
  await attr(page.locator('#claude-state'), 'data-state', 'busy');
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

  test('1. signs in through open\'s link; the same link a second time says it was used', (t) =>
    withHost(t, {}, async ({ h, page, context, url }) => {
      // Signed in: the code left the address bar, the cookie is the host's.
      assert.equal(new URL(page.url()).hash, '', 'the code stays in the URL');
      await text(page.locator('#session'), h.session.slice(0, 8));
      assert.ok(await page.locator('#signin').isHidden());
      const cookies = await context.cookies();
      assert.equal(cookies.length, 1, JSON.stringify(cookies));
      assert.equal(cookies[0].name, 'opzero_session');
      assert.equal(cookies[0].httpOnly, true);
      assert.equal(cookies[0].sameSite, 'Strict');
      assert.equal(cookies[0].secure, false);
      assert.equal(cookies[0].path, '/');
      assert.equal(await page.evaluate(() => document.cookie), '', 'the page can read its cookie');

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

  test('6. a reply with a file shows a link that downloads the same bytes', (t) =>
    withHost(t, {}, async ({ h, page }) => {
      const bytes = binaryBytes(300_000, 11);
      const src = path.join(h.work, 'report.bin');
      await fsp.writeFile(src, bytes);
      const id = await h.reply({ chat_id: 'web', text: 'Here is the report.', files: [src] });
      const link = reply(page, id).locator('a.file');
      await count(link, 1);
      assert.match(await link.getAttribute('href'), /^\/files\/[^/]+$/);
      assert.notEqual(await link.getAttribute('download'), null, 'no download attribute');
      assert.ok((await link.textContent()).includes('report.bin'), await link.textContent());
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      assert.equal(download.suggestedFilename(), 'report.bin');
      assert.equal(await download.failure(), null);
      assert.ok((await fsp.readFile(await download.path())).equals(bytes), 'the download differs');
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

  test('9. the cookie from a foreign Origin gets 403', (t) =>
    withHost(t, {}, async ({ h, context }) => {
      const [cookie] = await context.cookies();
      const Cookie = `${cookie.name}=${cookie.value}`;
      const inject = (Origin, content) =>
        rawHttp(h.port, 'POST', '/inject', {
          headers: { Cookie, Origin, 'Content-Type': 'application/json' },
          body: JSON.stringify({ content, chat_id: 'web' }),
        });
      const refused = { error: 'cross-origin request refused' };
      let r = await inject('http://evil.example', 'from evil');
      assert.deepEqual([r.status, r.json], [403, refused]);
      r = await inject(`http://127.0.0.1:${h.port + 1}`, 'from another port');
      assert.deepEqual([r.status, r.json], [403, refused]);
      // Through the browser's own request API (it sends the context's cookie).
      const viaBrowser = await context.request.post(`${h.origin}/inject`, {
        headers: { Origin: 'http://evil.example' },
        data: { content: 'from evil, via the browser', chat_id: 'web' },
      });
      assert.deepEqual([viaBrowser.status(), await viaBrowser.json()], [403, refused]);
      for (const p of ['/events', '/permissions']) {
        r = await rawHttp(h.port, 'GET', p, { headers: { Cookie, Origin: 'http://evil.example' } });
        assert.deepEqual([p, r.status, r.json], [p, 403, refused]);
      }
      r = await rawHttp(h.port, 'POST', '/permission', {
        headers: { Cookie, Origin: 'http://evil.example', 'Content-Type': 'application/json' },
        body: '{"request_id":"abcde","behavior":"allow"}',
      });
      assert.deepEqual([r.status, r.json], [403, refused]);
      // The same cookie from the page's own origin works: the refusals were
      // the origin's doing.
      r = await inject(h.origin, 'from the page');
      assert.deepEqual([r.status, r.json], [202, { ok: true }]);
      const n = await h.channelMessage();
      assert.equal(n.raw, '{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"from the page","meta":{"chat_id":"web"}}}');
      await h.noLine(isChannel, 300, 'channel notification');
      assert.deepEqual(h.withMethod(CHANNEL).map((l) => l.json.params.content), ['from the page']);
      assert.deepEqual(h.withMethod(VERDICT), []);
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
      { viewport: { width: 390, height: 844 }, contextOptions: { isMobile: true, hasTouch: true, deviceScaleFactor: 1 } },
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
        assert.deepEqual((await h.channelMessage()).json.params, { content: 'Allowed it, thanks', meta: { chat_id: 'web' } });
        const sent = page.locator('#log article.msg.mine', { hasText: 'Allowed it, thanks' });
        await count(sent, 1);
        await sleep(300);
        await inView(sent, 'the message just sent');
        await inView(page.getByLabel('Message', { exact: true }), 'the message box');
      },
    ));

  test('12. desktop screenshot (1280x800) with a realistic conversation', (t) =>
    withHost(t, { viewport: { width: 1280, height: 800 } }, async ({ h, page }) => {
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
});
