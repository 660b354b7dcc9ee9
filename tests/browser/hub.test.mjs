// The chat page on the hub (`opzero-host hub`), in a real browser (headless
// Chromium from the system): two real hosts and one real hub sharing one
// OPZERO_HOME, the hosts' stdin and stdout playing Claude Code. One sign-in
// at the hub lists every session; the page opens one at a time, through
// the hub's `/s/<session id>/...` routes. Run: npm ci --prefix tests/browser
// && node --test tests/browser/ (after cargo build -p opzero-host).
// Screenshots go to target/browser-tests/; the phone ones also to docs/.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';

import {
  CHANNEL,
  Host,
  Hub,
  PATIENT,
  REPO,
  TOKEN,
  VERDICT,
  binaryBytes,
  eventually,
  isChannel,
  pageToken,
  screenshot,
  signInHub,
  signedIn,
  sleep,
  useBrowser,
  attr,
  card,
  count,
  reply,
  text,
  keepFailure,
} from './harness.mjs';

const PHONE = { viewport: { width: 390, height: 844 }, contextOptions: { isMobile: true, hasTouch: true, deviceScaleFactor: 1 } };
const KEPT = 'opzero-mine:';

let browser;
useBrowser('failure-hub-', (b) => (browser = b));

/// Starts a host behind the test's hub (its sessions share the hub's
/// OPZERO_HOME), Claude idle, following its transcript.
async function startHost(env, opts) {
  const h = await Host.start({ opzeroHome: env.hub.home, claude: 'idle', config: PATIENT, ...opts });
  env.hosts.push(h);
  return h;
}

/// Runs `body` with a hub and two sessions behind it, `a` ("api-server",
/// the older) and `b` ("docs-site"), and a browser signed in to the hub's
/// page once; on a failure adds what the hub and the hosts printed and
/// saves what the page showed; always cleans up. Fails on any uncaught
/// exception in the page and on anything its Content-Security-Policy
/// blocked.
async function withHub(t, opts, body) {
  const { viewport, contextOptions } = opts;
  const hub = await Hub.start();
  const env = { hub, hosts: [], contexts: [] };
  try {
    env.a = await startHost(env, { name: 'api-server', project: 'api-server' });
    env.b = await startHost(env, { name: 'docs-site', project: 'docs-site' });
    await hub.lists(env.a, env.b);
    const s = await signInHub(browser, hub, { viewport, contextOptions });
    env.contexts.push(s.context);
    Object.assign(env, s);
    await body(env);
    assert.deepEqual(env.errors.uncaught, [], 'uncaught exceptions in the page');
    assert.deepEqual(env.errors.console.filter((m) => /Content Security Policy/i.test(m)), [], 'the CSP blocked something');
  } catch (e) {
    await keepFailure(e, t, env, 'failure-hub-');
    e.message += `\n${hub.describe()}`;
    for (const h of env.hosts) e.message += `\n--- host ${h.name} (${h.session}):\n${h.describe()}`;
    throw e;
  } finally {
    for (const c of env.contexts) await c.close().catch(() => {});
    for (const h of env.hosts) await h.stop();
    await hub.stop();
  }
}

const entry = (page, h) => page.locator(`#session-list a.entry[data-session-id="${h.session}"]`);
const box = (page) => page.getByLabel('Message', { exact: true });
const view = (page) => page.evaluate(() => document.body.dataset.view);

/// Waits until `page` shows session `h` (named `name`), its stream up, and
/// the address names it.
async function opened(page, h, name) {
  await eventually(async () => {
    assert.equal(await view(page), 'session');
    assert.equal(((await page.locator('#session').textContent()) ?? '').trim(), name);
    assert.equal(await page.locator('#connection').getAttribute('data-state'), 'online');
    assert.equal(new URL(page.url()).hash, `#s=${h.session}`);
    assert.equal(await entry(page, h).getAttribute('aria-current'), 'page');
  });
}

/// Picks session `h` in the list (a tap on a phone), and waits until it is open.
async function open(page, h, name, { tap = false } = {}) {
  await (tap ? entry(page, h).tap() : entry(page, h).click());
  await opened(page, h, name);
}

/// Types `content` in the composer and presses Enter; returns the channel
/// notification it made on `h`'s stdout, checked to be exactly what Claude
/// Code must see.
async function sendTyped(h, page, content) {
  await box(page).fill(content);
  await box(page).press('Enter');
  const n = await h.channelMessage();
  assert.deepEqual(n.json, { jsonrpc: '2.0', method: CHANNEL, params: { content, meta: { chat_id: 'web' } } });
  await eventually(async () => assert.equal(await box(page).inputValue(), ''));
  return n;
}

/// Claude Code takes the message of notification `n` and hands it to the model.
async function deliver(h, n) {
  await h.transcript.enqueue(n.json);
  await h.transcript.toModel(n.json);
}

/// The messages this tab keeps, by session id: {id: [text, ...]}.
function keptTexts(page) {
  return page.evaluate(
    (prefix) =>
      Object.fromEntries(
        Object.entries(sessionStorage)
          .filter(([k]) => k.startsWith(prefix))
          .map(([k, v]) => [k.slice(prefix.length), JSON.parse(v).map((m) => m.text)]),
      ),
    KEPT,
  );
}

async function inViewport(page, locator, what) {
  const { width, height } = page.viewportSize();
  const b = await locator.boundingBox();
  assert.ok(b, `${what} is not rendered`);
  assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.width <= width + 0.5 && b.y + b.height <= height + 0.5, `${what} is outside the viewport: ${JSON.stringify(b)}`);
}

async function noOverflow(page) {
  const { width } = page.viewportSize();
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= width, `the page is ${wide}px wide at ${width}px`);
}

/// A screenshot in OUT, copied to docs/ for the README.
async function docsScreenshot(page, name) {
  const file = await screenshot(page, name);
  await fsp.copyFile(file, path.join(REPO, 'docs', `${name}.png`));
}

// One test at a time, as the page's own tests run.
describe('the chat page on the hub', { concurrency: 1 }, () => {
  test('hub 1. sign in once and see two sessions: name, folder, busy or idle, live; one that ends leaves the list', (t) =>
    withHub(t, {}, async (env) => {
      const { hub, a, b, page } = env;
      const list = page.locator('#session-list a.entry');
      await count(list, 2);
      // Oldest first.
      assert.deepEqual(await list.evaluateAll((els) => els.map((e) => e.dataset.sessionId)), [a.session, b.session]);
      for (const [h, name] of [
        [a, 'api-server'],
        [b, 'docs-site'],
      ]) {
        const e = entry(page, h);
        await text(e.locator('.name'), name);
        await text(e.locator('.cwd'), h.transcript.cwd);
        await text(e.locator('.id'), h.session.slice(0, 8));
        await attr(e, 'data-state', 'idle');
        await text(e.locator('.state'), 'idle');
        await attr(e, 'data-pending', '0');
        await attr(e, 'data-unread', '0');
        assert.equal(await e.locator('.badge').count(), 0);
        // Exactly that, nothing more.
        assert.equal(await e.evaluate((n) => [...n.childNodes].map((c) => c.textContent).join('|')), `${name}idle|${h.transcript.cwd}${h.session.slice(0, 8)}`);
      }
      // No session is open: the list, and no conversation.
      assert.equal(await view(page), 'list');
      assert.ok(await page.locator('#log').isHidden());
      assert.ok(await page.locator('#composer').isHidden());
      assert.equal(await page.locator('#session').textContent(), '');

      // The list is live: busy and idle follow Claude's session file.
      await b.setClaudeStatus('busy');
      await attr(entry(page, b), 'data-state', 'busy');
      await text(entry(page, b).locator('.state'), 'busy');
      await b.setClaudeStatus('idle');
      await attr(entry(page, b), 'data-state', 'idle');

      // One sign-in, the hub's: a token, and nothing secret in the page or
      // its storage.
      const token = await pageToken(page);
      assert.match(token ?? '', TOKEN);
      const storage = await page.evaluate(() => JSON.stringify(Object.entries(sessionStorage)));
      const html = await page.content();
      for (const [what, secret] of [
        ['the hub', hub.secret],
        ['host a', a.secret],
        ['host b', b.secret],
      ]) {
        assert.ok(!storage.includes(secret), `${what}'s secret is in the page's storage`);
        assert.ok(!html.includes(secret), `${what}'s secret is in the page`);
      }

      // A session that starts shows up; one whose host exits leaves.
      const c = await startHost(env, { name: 'third', project: 'third' });
      await entry(page, c).waitFor();
      await count(list, 3);
      await text(entry(page, c).locator('.name'), 'third');
      await c.stop();
      await count(list, 2, 5000);
      assert.deepEqual(await list.evaluateAll((els) => els.map((e) => e.dataset.sessionId)), [a.session, b.session]);

      // A reload is still signed in with the same token: the same list.
      await page.reload();
      await signedIn(page);
      await count(list, 2);
      assert.equal(await pageToken(page), token);
    }));

  test('hub 2. switch between sessions and send to each: each host gets only its own message, each conversation only its own', (t) =>
    withHub(t, {}, async ({ a, b, page }) => {
      const streams = [];
      page.on('request', (r) => {
        const p = new URL(r.url()).pathname;
        if (p.endsWith('/events')) streams.push(p);
      });
      await open(page, a, 'api-server');
      await sendTyped(a, page, 'to api-server');
      // Something typed and not sent stays with its session.
      await box(page).fill('a draft for api-server');

      // Opening B ends A's stream: only the open session's is held.
      const aStreamEnds = page.waitForEvent('requestfailed', (r) => new URL(r.url()).pathname === `/s/${a.session}/events`);
      await open(page, b, 'docs-site');
      await aStreamEnds;
      assert.equal(await box(page).inputValue(), '');
      assert.equal(await page.locator('#log article').count(), 0, "A's conversation shows in B");
      await sendTyped(b, page, 'to docs-site');
      const ra = await a.replyQueued({ chat_id: 'web', text: 'reply from api-server' });
      const rb = await b.reply({ chat_id: 'web', text: 'reply from docs-site' });
      await reply(page, rb).waitFor();
      await text(reply(page, rb).locator('.body'), 'reply from docs-site');
      await sleep(300);
      assert.equal(await page.locator('#log', { hasText: 'api-server' }).count(), 0, "A's reply shows in B");

      // Back to A: its conversation (its reply, made meanwhile, included)
      // and its draft; nothing of B's.
      await open(page, a, 'api-server');
      await reply(page, ra).waitFor();
      await text(reply(page, ra).locator('.body'), 'reply from api-server');
      await count(page.locator('#log article.msg.mine', { hasText: 'to api-server' }), 1);
      assert.equal(await page.locator('#log', { hasText: 'docs-site' }).count(), 0, "B's conversation shows in A");
      assert.equal(await box(page).inputValue(), 'a draft for api-server');

      // This tab keeps each session's messages under its own id.
      assert.deepEqual(await keptTexts(page), { [a.session]: ['to api-server'], [b.session]: ['to docs-site'] });

      // A reload opens the same session again (the address names it), and
      // shows its conversation once.
      await page.reload();
      await signedIn(page);
      await opened(page, a, 'api-server');
      await reply(page, ra).waitFor();
      await sleep(700);
      await count(page.locator('#log article.msg.mine'), 1);
      await count(page.locator('#log article.msg.reply'), 1);

      // Sent from the page once each, each to its own host.
      await a.noLine(isChannel, 300, 'channel notification');
      await b.noLine(isChannel, 0, 'channel notification');
      assert.deepEqual(a.withMethod(CHANNEL).map((l) => l.json.params.content), ['to api-server']);
      assert.deepEqual(b.withMethod(CHANNEL).map((l) => l.json.params.content), ['to docs-site']);
      // The only streams the page read: the hub's list and the open session's.
      const allowed = new Set(['/events', `/s/${a.session}/events`, `/s/${b.session}/events`]);
      assert.deepEqual(streams.filter((p) => !allowed.has(p)), []);
    }));

  test('hub 3. a permission prompt in the session you are not looking at shows on the list, and goes once answered', (t) =>
    withHub(t, {}, async ({ a, b, page }) => {
      await open(page, a, 'api-server');
      b.permissionRequest({ request_id: 'bkqzp', tool_name: 'Bash', description: 'Publish the docs site', input_preview: 'npm run deploy' });
      const eb = entry(page, b);
      await attr(eb, 'data-pending', '1');
      const badge = eb.locator('.badge.pending');
      await badge.waitFor({ state: 'visible' });
      await text(badge, '1 prompt waiting');
      // Marked: the entry stands out from the others.
      assert.ok(await eb.evaluate((e) => e.classList.contains('waiting')));
      const looks = (l) => l.evaluate((e) => [getComputedStyle(e).backgroundColor, getComputedStyle(e).borderLeftColor].join());
      assert.notEqual(await looks(eb), await looks(entry(page, a)));
      assert.match(await page.title(), /^\(1\) /);
      // Not in the conversation you are looking at.
      assert.equal(await card(page, 'bkqzp').count(), 0);
      await noOverflow(page);
      await screenshot(page, 'hub-desktop-1280x800');
      assert.equal(await entry(page, a).getAttribute('data-pending'), '0');

      // Opening B shows the prompt; answering it there clears the mark.
      await open(page, b, 'docs-site');
      await card(page, 'bkqzp').waitFor();
      await card(page, 'bkqzp').getByRole('button', { name: 'Allow', exact: true }).click();
      assert.deepEqual((await b.take((j) => j.method === VERDICT)).json.params, { request_id: 'bkqzp', behavior: 'allow' });
      await attr(card(page, 'bkqzp'), 'data-state', 'allowed');
      await attr(eb, 'data-pending', '0');
      await badge.waitFor({ state: 'detached' });
      assert.ok(!(await eb.evaluate((e) => e.classList.contains('waiting'))));
      assert.equal(a.withMethod(VERDICT).length, 0);
    }));

  test('hub 4. unread counts: replies in a session you are not looking at count, and clear when you open it', (t) =>
    withHub(t, {}, async ({ hub, a, b, page }) => {
      await open(page, a, 'api-server');
      const [ea, eb] = [entry(page, a), entry(page, b)];
      const r1 = await b.replyQueued({ chat_id: 'web', text: 'The docs build is green.' });
      await attr(eb, 'data-unread', '1');
      await text(eb.locator('.badge.unread'), '1 new reply');
      const r2 = await b.replyQueued({ chat_id: 'web', text: 'And every link checks out.' });
      await attr(eb, 'data-unread', '2');
      await text(eb.locator('.badge.unread'), '2 new replies');
      // A reply in the session you are looking at is read as it comes.
      const ra = await a.reply({ chat_id: 'web', text: 'The tests pass.' });
      await reply(page, ra).waitFor();
      await attr(ea, 'data-unread', '0');

      // Opening B reads its replies: they show, and the count goes.
      await open(page, b, 'docs-site');
      await reply(page, r1).waitFor();
      await reply(page, r2).waitFor();
      await attr(eb, 'data-unread', '0');
      await eb.locator('.badge.unread').waitFor({ state: 'detached' });
      assert.equal((await hub.sessions()).find((s) => s.session_id === b.session)?.unread, 0);

      // Once you are away from B again, its next reply counts again.
      await open(page, a, 'api-server');
      await b.replyQueued({ chat_id: 'web', text: 'One more thing.' });
      await attr(eb, 'data-unread', '1');
      await attr(ea, 'data-unread', '0');
    }));

  test('hub 5. at 390x844: the list, a conversation, and the way back (phone screenshots)', (t) =>
    withHub(t, PHONE, async ({ a, b, page }) => {
      // The list, on its own.
      assert.equal(await view(page), 'list');
      assert.ok(await page.locator('#log').isHidden());
      assert.ok(await page.locator('#back').isHidden());
      await open(page, a, 'api-server', { tap: true });
      // A conversation, on its own, with a way back.
      assert.ok(await page.locator('#sessions').isHidden());
      assert.ok(await page.locator('#back').isVisible());
      await deliver(a, await sendTyped(a, page, 'The CI run failed again. Can you look at why, and fix it if it is simple?'));
      const r = await a.reply({
        chat_id: 'web',
        text:
          'Found it: the **browser tests** need `chromium`, and CI does not install it.\n\n' +
          '- add `apt-get install -y chromium` to `.ci/run`\n' +
          '- pin `playwright-core` in `tests/browser/package.json`\n\n' +
          'Shall I make the change?',
      });
      await reply(page, r).waitFor();
      await deliver(a, await sendTyped(a, page, 'Yes please, go ahead.'));

      // Back to the list. Meanwhile A asks to edit a file, and B replies.
      await page.locator('#back').tap();
      await eventually(async () => assert.equal(await view(page), 'list'));
      assert.equal(new URL(page.url()).hash, '');
      assert.ok(await page.locator('#log').isHidden());
      await a.setClaudeStatus('busy');
      await a.transcript.tool('Edit', { file_path: '.ci/run', old_string: 'apt-get install -y tmux', new_string: 'apt-get install -y tmux chromium' });
      a.permissionRequest({
        request_id: 'kqmzp',
        tool_name: 'Edit',
        description: 'Add the chromium install to .ci/run',
        input_preview: '{"file_path": ".ci/run", "old_string": "apt-get install -y tmux", "new_string": "apt-get install -y tmux chromium"}',
      });
      await b.replyQueued({ chat_id: 'web', text: 'The install section of the README now covers the hub.' });
      await attr(entry(page, a), 'data-pending', '1');
      await attr(entry(page, a), 'data-state', 'busy');
      await attr(entry(page, b), 'data-unread', '1');
      await sleep(300);
      for (const [h, what] of [
        [a, 'the api-server entry'],
        [b, 'the docs-site entry'],
      ]) {
        await inViewport(page, entry(page, h), what);
      }
      await inViewport(page, entry(page, a).locator('.badge.pending'), 'the prompt waiting');
      await inViewport(page, page.getByRole('button', { name: 'Sign out' }), 'Sign out');
      await noOverflow(page);
      await docsScreenshot(page, 'hub-list-phone');

      // A again: its prompt is a card; the way back says B has a reply.
      await open(page, a, 'api-server', { tap: true });
      await card(page, 'kqmzp').waitFor();
      await reply(page, r).waitFor();
      await text(page.locator('#back-badge'), '1');
      assert.match((await page.locator('#back').getAttribute('aria-label')) ?? '', /1 new reply/);
      await text(page.locator('#activity'), 'Edit: .ci/run');
      await sleep(300); // let scrolling settle
      await inViewport(page, card(page, 'kqmzp'), 'the card');
      await inViewport(page, box(page), 'the message box');
      await inViewport(page, page.getByRole('button', { name: 'Send' }), 'the Send button');
      await inViewport(page, page.locator('#back'), 'the way back');
      await noOverflow(page);
      await docsScreenshot(page, 'hub-session-phone');

      // Usable by touch: Allow, then back to the list, where nothing waits.
      await card(page, 'kqmzp').getByRole('button', { name: 'Allow', exact: true }).tap();
      assert.deepEqual((await a.take((j) => j.method === VERDICT)).json.params, { request_id: 'kqmzp', behavior: 'allow' });
      await attr(card(page, 'kqmzp'), 'data-state', 'allowed');
      await page.locator('#back').tap();
      await eventually(async () => assert.equal(await view(page), 'list'));
      await attr(entry(page, a), 'data-pending', '0');
    }));

  test('hub 6. files both ways through the hub: an attachment reaches its session, a reply\'s file downloads the same bytes', (t) =>
    withHub(t, {}, async ({ hub, a, b, page, errors }) => {
      await open(page, a, 'api-server');
      await open(page, b, 'docs-site');
      const token = await pageToken(page);
      const fileRequests = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname.includes('/files/')) fileRequests.push(r);
      });
      // Up: multipart, through the hub, to B.
      const up = binaryBytes(70_000, 5);
      await page.locator('#files').setInputFiles({ name: 'data.bin', mimeType: 'application/octet-stream', buffer: up });
      await box(page).fill('see the attached data');
      await box(page).press('Enter');
      const n = (await b.channelMessage()).json;
      const p = n.params?.meta?.file_path;
      assert.equal(typeof p, 'string', JSON.stringify(n));
      assert.deepEqual(n.params, { content: 'see the attached data', meta: { chat_id: 'web', file_path: p } });
      assert.ok((await fsp.readFile(p)).equals(up), 'the saved file differs');
      await eventually(async () => assert.equal(await page.locator('#files').evaluate((i) => i.files.length), 0));
      await a.noLine(isChannel, 300, 'channel notification');

      // Down: a reply's file, fetched through the hub with the token.
      const bytes = binaryBytes(300_000, 11);
      const src = path.join(b.work, 'report.bin');
      await fsp.writeFile(src, bytes);
      const id = await b.reply({ chat_id: 'web', text: 'Here is the report.', files: [src] });
      const link = reply(page, id).locator('a.file');
      await count(link, 1);
      const href = await link.getAttribute('href');
      assert.match(href, new RegExp(`^/s/${b.session}/files/[^/]+$`));
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      assert.equal(download.suggestedFilename(), 'report.bin');
      assert.equal(await download.failure(), null);
      assert.ok((await fsp.readFile(await download.path())).equals(bytes), 'the download differs');
      assert.match(download.url(), /^blob:/);
      assert.deepEqual(fileRequests.map((r) => new URL(r.url()).pathname), [href]);
      assert.equal((await fileRequests[0].allHeaders()).authorization, `Bearer ${token}`);
      assert.deepEqual(errors.console.filter((m) => /Content Security Policy/i.test(m)), []);
      // The same file id is not A's, and nothing comes without the token.
      const fileId = href.split('/').pop();
      const other = await hub.http('GET', `/s/${a.session}/files/${fileId}`, { headers: { Authorization: `Bearer ${token}`, Origin: hub.origin } });
      assert.equal(other.status, 404, other.body);
      assert.equal((await hub.http('GET', href)).status, 403);
    }));

  test('hub 7. the open session ending says so, leaves the list, and takes no more messages', (t) =>
    withHub(t, {}, async ({ a, b, page }) => {
      await open(page, b, 'docs-site');
      await sendTyped(b, page, 'are you there?');
      await b.stop();
      await page.locator('#log p.note.ended').waitFor();
      await text(page.locator('#log p.note.ended'), 'This session has ended: its Claude Code is no longer running.');
      await count(entry(page, b), 0);
      await text(page.locator('#connection'), 'session ended');
      assert.ok(await page.locator('#composer').isHidden());
      // What it showed stays readable; the other session still opens.
      await count(page.locator('#log article.msg.mine', { hasText: 'are you there?' }), 1);
      await open(page, a, 'api-server');
      assert.ok(await page.locator('#composer').isVisible());
      assert.equal(await page.locator('#log p.note.ended').count(), 0);
      await sendTyped(a, page, 'still here');
    }));

  test('hub 8. Sign out ends the one sign-in at the hub, forgets every session here, and says to run `opzero-host open`', (t) =>
    withHub(t, {}, async ({ hub, a, b, page }) => {
      await open(page, a, 'api-server');
      await sendTyped(a, page, 'before signing out');
      await open(page, b, 'docs-site');
      await sendTyped(b, page, 'also before signing out');
      const token = await pageToken(page);
      assert.match(token ?? '', TOKEN);
      const logout = page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname.endsWith('/logout'));
      await page.getByRole('button', { name: 'Sign out' }).click();
      assert.equal(new URL((await logout).url()).pathname, '/logout');
      const message = page.locator('#signin-message');
      await message.waitFor({ state: 'visible' });
      await text(message, 'You are signed out. On the computer running Claude Code, run `opzero-host open` and open the link it prints.');
      for (const what of ['#sessions', '#log', '#composer', '#sign-out', '#back']) assert.ok(await page.locator(what).isHidden(), `${what} still shows`);
      assert.equal(await page.locator('#session-list a.entry').count(), 0);
      assert.equal(await pageToken(page), null);
      assert.deepEqual(await keptTexts(page), {});

      // The hub refuses the token from now on, for the list and for every session.
      const headers = { Authorization: `Bearer ${token}`, Origin: hub.origin };
      for (const p of ['/sessions', `/s/${a.session}/permissions`, `/s/${b.session}/status`]) {
        const r = await hub.http('GET', p, { headers });
        assert.equal(r.status, 403, `${p}: ${r.status} ${r.body}`);
      }
      // A reload stays signed out, and gives the hub's hint.
      await page.reload();
      await text(message, 'This browser is not signed in. On the computer running Claude Code, run `opzero-host open` and open the link it prints.');
      assert.equal(await page.locator('#session-list a.entry').count(), 0);
    }));
});
