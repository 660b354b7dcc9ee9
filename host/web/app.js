// opzero-host's chat page. Plain JS, no dependencies. Every piece of text
// from a message goes into the DOM as text nodes (never as HTML), so
// nothing a message holds can run or render as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const logEl = $("#log");
const textEl = $("#text");
const filesEl = $("#files");
const sendEl = $("#send");
const errorEl = $("#send-error");

const CHAT_ID = "web";
/** Reply bubbles by event id (for edits), prompt cards by request id. */
const replies = new Map();
const cards = new Map();
/** Event ids already shown: a replay after a reconnect shows nothing twice. */
const seen = new Set();
let lastEventId = 0;
let sessionId = "";
/** The message being sent: a retry of the same text keeps its id, so the
 * host can tell it from a new message if the first try did arrive. */
let pending = null;

/** On a hub (`opzero-host hub`, whose `/status` says `"hub": true`) the page
 * lists every session and opens one at a time: its routes are the host's,
 * under `/s/<session id>` (`base`). On a host's own page `base` is "". */
let hub = false;
/** The open session's id on a hub ("" while none is), and its routes' prefix. */
let openId = "";
let base = "";
/** Counts the sessions opened: what an answer for an earlier one must not touch. */
let generation = 0;
/** The route `path` of the open session (of the host, on a host's page). */
const at = (path) => base + path;
/** Who answers: the host itself, or the hub in front of the hosts. */
const server = () => (hub ? "hub" : "host");

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) e.append(c);
  }
  return e;
}

// --- markdown, safely: a small subset, built as DOM nodes -----------------

const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+/;
const FENCE = /^\s*```/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const QUOTE = /^>\s?/;

function markdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  const special = (line) => FENCE.test(line) || HEADING.test(line) || LIST_ITEM.test(line) || QUOTE.test(line);
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i++;
    } else if (FENCE.test(line)) {
      const code = [];
      for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
      i++;
      out.append(el("pre", {}, el("code", {}, code.join("\n"))));
    } else if (HEADING.test(line)) {
      const [, hashes, title] = line.match(HEADING);
      out.append(el(`h${Math.min(6, hashes.length + 2)}`, {}, inline(title)));
      i++;
    } else if (LIST_ITEM.test(line)) {
      const list = el(/^\s*\d/.test(line) ? "ol" : "ul");
      for (; i < lines.length && LIST_ITEM.test(lines[i]); i++) {
        list.append(el("li", {}, inline(lines[i].replace(LIST_ITEM, ""))));
      }
      out.append(list);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ""));
      out.append(el("blockquote", {}, markdown(quoted.join("\n"))));
    } else {
      const p = el("p");
      for (let first = true; i < lines.length && lines[i].trim() !== "" && !special(lines[i]); i++, first = false) {
        if (!first) p.append(el("br"));
        p.append(...inline(lines[i]));
      }
      out.append(p);
    }
  }
  return out;
}

const INLINE = new RegExp(
  [
    /(`+)([\s\S]+?)\1/, // 1, 2: code
    /\*\*(?=\S)([\s\S]+?)\*\*/, // 3: bold
    /\*(?=\S)([^*]+?)\*/, // 4: italic
    /\b_(?=\S)([^_]+?)_\b/, // 5: italic
    /\[([^\]\n]+)\]\(([^)\s]+)\)/, // 6, 7: link
    /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/, // 8: bare link
  ].map((r) => r.source).join("|"),
  "g",
);

function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1]) out.push(el("code", {}, m[2]));
    else if (m[3] !== undefined) out.push(el("strong", {}, inline(m[3])));
    else if (m[4] !== undefined || m[5] !== undefined) out.push(el("em", {}, inline(m[4] ?? m[5])));
    else if (m[6] !== undefined) out.push(link(m[7], m[6], m[0]));
    else out.push(link(m[8], m[8], m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Only http(s) links become links; anything else stays text. A label that
 * reads as an address other than the link's own would lie about where the
 * link goes (`[https://good.example](https://evil.example)`): such a link
 * shows where it goes instead. */
function link(url, label, raw) {
  if (!/^https?:\/\//i.test(url)) return raw;
  const words = label.split(/\s+/).map((w) => w.replace(/^[("'<[]+|[)"'>\].,;:!?]+$/g, ""));
  const text = words.some((word) => URL_LIKE.test(word) && !sameUrl(word, url)) ? shownUrl(url) : label;
  return el("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, text);
}

// "scheme://…", "www.…", or a bare domain ("example.com", "example.com/path"):
// names ending in letters, dots including the ones browsers read as dots.
const URL_LIKE = /^(?:[a-z][a-z0-9+.-]*:\/\/|www[.。．｡])|^[\p{L}\p{N}-]+(?:[.。．｡][\p{L}\p{N}-]+)*[.。．｡]\p{L}{2,}(?::\d+)?(?:[/?#]|$)/iu;

/** Whether an address in a label is the link's own (told apart from it by
 * case or a trailing slash, say, or a scheme left out). */
function sameUrl(word, url) {
  const target = parseUrl(url)?.href;
  return [word, `https://${word}`, `http://${word}`].some((u) => /^https?:\/\//i.test(u) && parseUrl(u)?.href === target);
}

function parseUrl(u) {
  try {
    return new URL(u);
  } catch {
    return null;
  }
}

/** The address as the browser will go to it (an international name in its
 * ASCII form, which shows look-alike letters for what they are). */
const shownUrl = (url) => parseUrl(url)?.href ?? url;

// --- the conversation --------------------------------------------------------

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Adds to the end, in the order things happened here (the browser's clock
 * may disagree with the host's), and follows the end if the reader is there. */
function place(node) {
  const atEnd = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 80;
  logEl.append(node);
  if (atEnd) logEl.scrollTop = logEl.scrollHeight;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** Messages sent from here, by id: each one's mark follows the host's
 * receipts for it, which may come before the host's answer to the send. */
const mine = new Map();
/** What each mark says. */
const MARKS = {
  sending: "sending…",
  sent: "sent",
  queued: "queued",
  seen: "seen by Claude",
  undelivered: "not delivered",
  dropped: "kept from Claude",
};
/** How far along a message is: a receipt never moves a mark back. */
const RANK = { sending: 0, sent: 1, queued: 2, seen: 3 };

/** A message from here, in the log. `m` is {id, text, files (names), ts?,
 * state, reason?, upload (its File objects; null when they are gone, after
 * a reload)}. */
function showMine(m) {
  // Whose it is: an answer that comes after another session opened still
  // goes to this one's storage and routes.
  m.key ??= storageKey();
  m.base ??= base;
  const files = m.files.length ? el("span", { class: "meta" }, `attached: ${m.files.join(", ")}`) : null;
  m.when = el("span", { class: "when" }, m.ts ? time(m.ts) : "");
  m.mark = el("span", { class: "mark" });
  m.problem = el("div", { class: "problem", hidden: true });
  m.node = el("article", { class: "msg mine", "data-message-id": m.id }, m.text, files, el("span", { class: "meta" }, m.when, m.mark), m.problem);
  mine.set(m.id, m);
  setMark(m, m.state, m.reason);
  place(m.node);
  return m;
}

/** Shows where message `m` is: `state` is one of MARKS; `reason` says why
 * it was not delivered. */
function setMark(m, state, reason) {
  m.state = state;
  m.reason = state === "undelivered" ? reason ?? "" : undefined;
  m.node.dataset.state = state;
  m.node.classList.toggle("sending", state === "sending");
  m.mark.textContent = MARKS[state] ?? state;
  if (state === "undelivered") {
    const retry = m.upload ? el("button", { type: "button", class: "retry" }, "Retry") : null;
    retry?.addEventListener("click", () => resend(m));
    const gone = m.upload ? null : el("p", {}, "Its files are no longer here: send them again.");
    m.problem.replaceChildren(...[el("p", {}, inline(m.reason)), gone, retry].filter(Boolean));
    m.problem.hidden = false;
  } else {
    m.problem.replaceChildren();
    m.problem.hidden = true;
  }
  // A retry under way is kept as what it was: after a reload, it has to
  // be tried again unless a receipt says it arrived.
  if (m.kept && state !== "sending") updateKept(m.key, m.id, { state, reason: m.reason });
}

/** The host has the message (its answer to the send, or a receipt that
 * came first): kept in this tab's storage from now on, with the last event
 * seen before it, so a reload shows it again where it was. */
function accepted(m, answer = {}) {
  if (answer.message_id && answer.message_id !== m.id) {
    // The host named it otherwise: its receipts will use that name.
    mine.delete(m.id);
    m.id = answer.message_id;
    m.node.dataset.messageId = m.id;
    mine.set(m.id, m);
  }
  if (m.state === "sending") setMark(m, answer.delivered === false ? "dropped" : "sent");
  if (!m.ts) {
    m.ts = Date.now();
    m.when.textContent = time(m.ts);
  }
  if (!m.kept) {
    keepMine(m.key, { id: m.id, text: m.text, files: m.files, after: m.after, ts: m.ts, state: m.state, reason: m.reason });
    m.kept = true;
  }
}

/** A receipt from the host, for a message sent from here (another
 * client's are not this page's to show). */
function receipt(e) {
  const m = mine.get(e.message_id);
  if (!m) return;
  if (e.state === "undelivered") {
    if (m.state !== "seen") setMark(m, "undelivered", e.reason);
  } else if (e.state in RANK && (m.state === "undelivered" || RANK[e.state] > (RANK[m.state] ?? Infinity))) {
    setMark(m, e.state);
  }
  if (m.state !== "sending") accepted(m);
}

/** Retry: the same message again, with the same id, so the host can tell
 * it from a new one. */
async function resend(m) {
  if (m.state !== "undelivered") return;
  const reason = m.reason;
  setMark(m, "sending");
  try {
    const r = await post(m);
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error ?? `the ${server()} answered ${r.status}`);
    if (m.state === "sending") setMark(m, answer.delivered === false ? "dropped" : "sent");
    showError("");
  } catch (err) {
    if (m.state !== "sending") return; // a receipt says it arrived after all
    setMark(m, "undelivered", reason);
    const why = err instanceof TypeError ? `the ${server()} cannot be reached` : err.message;
    showError(`Not sent again: ${why}.`);
  }
}

/** This tab's copy of the messages sent to a session, under its id. */
const STORAGE_PREFIX = "opzero-mine:";
const storageKey = () => `${STORAGE_PREFIX}${sessionId}`;
/** Messages sent before a reload, not shown yet (oldest first). */
let backlog = [];
/** Prompts `GET /permissions` listed at load, shown after the replay. */
const stillPending = [];

function keepMine(key, message) {
  try {
    const kept = JSON.parse(sessionStorage.getItem(key) ?? "[]");
    kept.push(message);
    sessionStorage.setItem(key, JSON.stringify(kept.slice(-200)));
  } catch {
    // No storage (a private window, say): a reload just forgets them.
  }
}

/** A kept message's mark, as it changes. */
function updateKept(key, id, change) {
  try {
    const kept = JSON.parse(sessionStorage.getItem(key) ?? "[]");
    const m = kept.find((k) => k.id === id);
    if (!m) return;
    Object.assign(m, change);
    sessionStorage.setItem(key, JSON.stringify(kept));
  } catch {
    // No storage: nothing was kept.
  }
}

/** Shows the messages sent before a reload that came before event `id`;
 * the receipts replayed after them move their marks on. */
function showKept(id) {
  while (backlog.length && backlog[0].after < id) {
    const k = backlog.shift();
    // Kept before messages had ids: a mark nothing will move.
    const m = { id: k.id ?? newId(), text: k.text, files: k.files, after: k.after, ts: k.ts, state: k.state ?? "sent", reason: k.reason };
    m.upload = m.files.length ? null : [];
    showMine(m);
    m.kept = k.id !== undefined;
  }
}

function addReply(id, e) {
  const body = el("div", { class: "body" }, markdown(e.text));
  const files = (e.files ?? []).map((f) =>
    // The click downloads it (see `download`); the href is only what the link names.
    el("li", {}, el("a", { class: "file", href: at(`/files/${encodeURIComponent(f.id)}`), download: f.name, "data-file-id": f.id }, f.name), ` ${size(f.size)}`),
  );
  const chat = e.chat_id !== CHAT_ID ? ` · to ${e.chat_id}` : "";
  const meta = el("span", { class: "meta" }, `Claude · ${time(e.ts)}${chat}`);
  const node = el("article", { class: "msg reply", "data-event-id": id, "data-chat-id": e.chat_id }, body, files.length ? el("ul", { class: "files" }, files) : null, meta);
  replies.set(id, node);
  place(node);
}

/** Claude's answer to a message from here that stayed in the terminal (no
 * reply came): shown as Claude's, saying where it was said. */
function addSaid(id, e) {
  const body = el("div", { class: "body" }, markdown(e.text));
  const chat = e.chat_id !== CHAT_ID ? ` · to ${e.chat_id}` : "";
  const meta = el("span", { class: "meta" }, `Claude · ${time(e.ts)} · `, el("span", { class: "said" }, "said in the terminal"), chat);
  place(el("article", { class: "msg reply terminal", "data-event-id": id, "data-chat-id": e.chat_id, "data-answers": e.message_id }, body, meta));
}

function editReply(e) {
  const node = replies.get(e.message_id);
  if (!node) return;
  node.querySelector(".body").replaceChildren(markdown(e.text));
  node.querySelector(".meta").textContent = `Claude · ${time(e.ts)} · edited`;
}

function addCard(p) {
  if (cards.has(p.request_id)) return;
  const allow = el("button", { type: "button", class: "allow" }, "Allow");
  const deny = el("button", { type: "button", class: "deny" }, "Deny");
  allow.addEventListener("click", () => answer(p.request_id, "allow"));
  deny.addEventListener("click", () => answer(p.request_id, "deny"));
  const node = el(
    "article",
    { class: "card permission", "data-request-id": p.request_id, "data-state": "pending", "aria-label": `Permission request ${p.request_id}` },
    el("h2", {}, `Claude wants to use ${p.tool_name}`),
    el("p", {}, p.description),
    p.input_preview ? el("pre", {}, p.input_preview) : null,
    el("div", { class: "actions" }, allow, deny),
    el("p", { class: "outcome", "aria-live": "polite" }),
  );
  cards.set(p.request_id, node);
  place(node);
}

function settleCard(requestId, state, outcome) {
  const node = cards.get(requestId);
  if (!node) return;
  node.dataset.state = state;
  node.querySelector(".actions")?.remove();
  node.querySelector(".outcome").textContent = outcome;
}

async function answer(requestId, behavior) {
  const node = cards.get(requestId);
  node?.querySelectorAll("button").forEach((b) => (b.disabled = true));
  try {
    const r = await api(at("/permission"), postJson({ request_id: requestId, behavior }));
    if (r.status === 403) return; // signed out
    if (!r.ok) {
      const why = (await r.json().catch(() => ({}))).error ?? `the host answered ${r.status}`;
      settleCard(requestId, "expired", `No longer pending: ${why}`);
    }
  } catch {
    node?.querySelectorAll("button").forEach((b) => (b.disabled = false));
    showError(`Not answered: the ${server()} cannot be reached.`);
  }
}

function setClaude(state) {
  const node = $("#claude-state");
  node.dataset.state = state ?? "unknown";
  node.textContent = state === "busy" ? "Claude is working…" : state === "idle" ? "Claude is idle" : "Claude: unknown";
  if (state === "idle") setActivity(null);
}

/** What Claude is doing now (its latest tool call), under #claude-state;
 * nothing once it is idle. */
function setActivity(e) {
  const node = $("#activity");
  const what = !e ? "" : e.summary && e.summary !== e.tool ? `${e.tool}: ${e.summary}` : e.tool ?? "";
  node.textContent = what;
  node.title = what;
  node.hidden = !what;
}

/** Whether the open session's stream is up (null: not tried yet), and the
 * hub's list stream. The header shows the list's while no session is open. */
let sessionOnline = null;
let listOnline = null;

function setConnected(online) {
  sessionOnline = online;
  paintConnection();
}

function paintConnection() {
  const node = $("#connection");
  if (hub && openId && ended) {
    node.dataset.state = "offline";
    node.textContent = "session ended";
    return;
  }
  const online = hub && !openId ? listOnline : sessionOnline;
  if (online === null) {
    node.dataset.state = "offline";
    node.textContent = "connecting…";
    return;
  }
  node.dataset.state = online ? "online" : "offline";
  node.textContent = online ? "online" : "offline, reconnecting…";
}

const capitalized = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function handle(id, e) {
  switch (e.type) {
    case "reply":
      return addReply(id, e);
    case "edit":
      return editReply(e);
    case "receipt":
      return receipt(e);
    case "unanswered":
      return addSaid(id, e);
    case "activity":
      return setActivity(e);
    case "status":
      return setClaude(e.state);
    case "permission_request":
      return addCard(e);
    case "permission_resolved": {
      const state = e.behavior === "allow" ? "allowed" : "denied";
      return settleCard(e.request_id, state, `${capitalized(state)} (${e.by ?? "elsewhere"})`);
    }
    case "permission_expired":
      return settleCard(e.request_id, "expired", "Expired: answer it in the terminal");
    case "config_error":
      return place(
        el(
          "div",
          { class: "note config", "data-state": "error", role: "alert" },
          el("p", {}, "A change to the host's config did not load; the filters before it still run:"),
          el("ul", {}, (e.errors ?? []).map((x) => el("li", {}, String(x)))),
        ),
      );
    case "config_loaded": {
      const filters = e.filters ?? [];
      const which = filters.length ? `filters: ${filters.join(", ")}` : "no filters";
      return place(el("p", { class: "note config", "data-state": "ok" }, `The host's config reloaded (${which}).`));
    }
    case "gap":
      return place(el("p", { class: "note" }, `Events ${e.from} to ${e.to} were missed (too old to replay).`));
  }
}

// --- the host ---------------------------------------------------------------

/** The sign-in token, kept in this tab's sessionStorage: storage is the
 * origin's (scheme, host and port), where a cookie would go to every port
 * of 127.0.0.1, whoever listens there. Never in a cookie, a URL or
 * localStorage. */
const TOKEN_KEY = "opzero-token";
let token = loadToken();

function loadToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function saveToken(value) {
  token = value;
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // No storage: signed in until a reload.
  }
}

function dropToken() {
  token = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing was kept.
  }
}

/** `fetch` with the token. A 403 to a request that carried it means the
 * sign-in has ended (expired, signed out elsewhere, the host restarted):
 * the page then says so. */
async function api(path, init = {}) {
  const sent = token;
  const headers = new Headers(init.headers);
  if (sent) headers.set("authorization", `Bearer ${sent}`);
  const r = await fetch(path, { ...init, headers });
  // Only the first refusal of this token speaks.
  if (r.status === 403 && sent && sent === token) {
    const why = (await r.clone().json().catch(() => ({}))).error;
    signedOut(endedMessage(why));
  }
  return r;
}

const postJson = (body) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function endedMessage(why) {
  // The host's bare "forbidden" is a token it does not know: most likely it
  // restarted. Its other reasons say what to run.
  const message = why && why !== "forbidden" ? `${capitalized(why)}.` : `You are signed out (did the ${server()} restart?).`;
  return message.includes("opzero-host open") ? message : `${message} ${openHint()}`;
}

function showSignedOut(message) {
  $("#signin-message").textContent = message;
  $("#signin").hidden = false;
  logEl.hidden = true;
  $("#composer").hidden = true;
  $("#sign-out").hidden = true;
  if (hub) {
    document.body.dataset.view = "signin";
    for (const id of ["#sessions", "#pick", "#back", "#claude"]) $(id).hidden = true;
    document.title = TITLE;
  }
  const conn = $("#connection");
  conn.dataset.state = "offline";
  conn.textContent = "signed out";
}

function showSignedIn() {
  $("#signin").hidden = true;
  $("#sign-out").hidden = false;
  if (hub) return showView();
  logEl.hidden = false;
  $("#composer").hidden = false;
}

/** The sign-in is over: forget the token, stop the stream, say so. */
function signedOut(message) {
  dropToken();
  stopListening();
  if (hub) forgetSessions();
  showSignedOut(message);
}

function openHint() {
  // One sign-in at the hub serves every session.
  if (hub) return "On the computer running Claude Code, run `opzero-host open` and open the link it prints.";
  const short = sessionId.slice(0, 8) || "SESSION";
  return `On the computer running Claude Code, run \`opzero-host open ${short}\` and open the link it prints.`;
}

/** Ends the sign-in at the host too, so the token is worth nothing even to
 * someone who copied it; and forgets this tab's copy of the conversation. */
async function signOut() {
  const sent = token;
  if (!sent) return;
  const button = $("#sign-out");
  button.disabled = true;
  stopListening();
  if (hub) stopHub();
  let note = "";
  try {
    // On a hub: the hub's own, which ends the one sign-in every session used.
    const r = await fetch("/logout", { method: "POST", headers: { authorization: `Bearer ${sent}` } });
    // A 403: it had ended already.
    if (!r.ok && r.status !== 403) note = ` The ${server()} answered ${r.status}, so the sign-in may still be valid until it expires.`;
  } catch {
    note = ` The ${server()} could not be reached, so the sign-in stays valid until it expires or the ${server()} stops.`;
  }
  button.disabled = false;
  try {
    if (hub) {
      // Every session's, kept under its id.
      for (const key of Object.keys(sessionStorage)) if (key.startsWith(STORAGE_PREFIX)) sessionStorage.removeItem(key);
    } else {
      sessionStorage.removeItem(storageKey());
    }
  } catch {
    // Nothing was kept.
  }
  backlog = [];
  mine.clear();
  logEl.replaceChildren();
  signedOut(`You are signed out.${note} ${openHint()}`);
}

// --- the event stream: Server-Sent Events, read with fetch -------------------
// (EventSource cannot send the token.)

/** A Server-Sent Events parser, by the HTML standard's rules: feed it the
 * body's bytes as they come, in chunks that may split a line, a CRLF or a
 * character anywhere; it calls `onEvent(id, data)` for each message. */
function sseParser(onEvent) {
  const decoder = new TextDecoder(); // UTF-8; drops a leading BOM itself
  let buffer = "";
  let afterCR = false; // the last chunk ended in CR: a LF first is its pair
  let data = [];
  let type = "";
  let id = ""; // carries over to events that have no id of their own
  function line(l) {
    if (l === "") {
      if (data.length && (type === "" || type === "message")) onEvent(id, data.join("\n"));
      data = [];
      type = "";
      return;
    }
    if (l.startsWith(":")) return; // a comment: `: connected`, `: ping`
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "event") type = value;
    // `retry`: the page keeps its own pace.
  }
  return (chunk) => {
    let text = decoder.decode(chunk, { stream: true });
    if (afterCR && text.startsWith("\n")) text = text.slice(1);
    if (!text) return;
    buffer += text;
    afterCR = buffer.endsWith("\r");
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    lines.forEach(line);
  };
}

function onEvent(idText, data) {
  const id = Number(idText);
  if (seen.has(id)) return;
  seen.add(id);
  showKept(id);
  lastEventId = Math.max(lastEventId, id);
  try {
    handle(id, JSON.parse(data));
  } catch (err) {
    console.error("bad event", data, err);
  }
}

/** An event stream, read with `api` until it drops, then opened again
 * after a pause that grows by a second with each failure in a row, up to
 * 3 s. Each attempt asks `request()` for its path and headers; `opened(r)`
 * sees each answer first and may end the following (false); `onEvent`
 * takes each event; `online(up)` hears each connect and drop. A 403 ends
 * it for good: the sign-in is over. */
class Follower {
  constructor({ request, opened = () => true, onEvent, online }) {
    Object.assign(this, { request, opened, onEvent, online });
    this.ctl = null; // the running attempt's AbortController
    this.retry = 0; // the pending reconnect
    this.failures = 0;
  }

  stop() {
    clearTimeout(this.retry);
    this.ctl?.abort();
    this.ctl = null;
  }

  async start() {
    const ctl = new AbortController();
    this.ctl = ctl;
    try {
      const [path, headers] = this.request();
      const r = await api(path, { headers: { accept: "text/event-stream", ...headers }, cache: "no-store", signal: ctl.signal });
      if (r.status === 403) return; // signed out already
      if (this.ctl !== ctl || !this.opened(r)) return;
      if (!r.ok || !r.body) throw new Error(`answered ${r.status}`);
      this.failures = 0;
      this.online(true);
      const feed = sseParser(this.onEvent);
      const reader = r.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.ctl !== ctl) break;
        feed(value);
      }
    } catch {
      // Dropped, or not reached: start again below.
    }
    if (this.ctl !== ctl) return; // stopped (signed out), or replaced
    this.online(false);
    this.failures++;
    this.retry = setTimeout(() => this.start(), Math.min(3000, 1000 * this.failures));
  }
}

/** The open session's stream: after a drop it starts again after the last
 * event shown (`Last-Event-ID`, and `since` for good measure). */
const sessionStream = new Follower({
  request: () => [at(`/events?since=${lastEventId}`), { "last-event-id": String(lastEventId) }],
  opened: (r) => {
    if (!(hub && r.status === 404)) return true;
    // The hub knows no such session (any more): it ended.
    sessionEnded();
    return false;
  },
  onEvent,
  online: (up) => {
    setConnected(up);
    if (!up) return;
    // The replay comes at once. Then what was sent after its last event,
    // and prompts still pending whose events are too old to replay.
    const gen = generation;
    setTimeout(() => {
      if (gen !== generation) return; // another session is open now
      showKept(Infinity);
      for (const p of stillPending.splice(0)) addCard(p);
    }, 500);
  },
});
function listen() {
  sessionStream.start();
}

function stopListening() {
  sessionStream.stop();
}

// --- the hub: every session on one page --------------------------------------
// The list comes from the hub's own stream (`GET /events`), which takes
// nothing from any session. Only the open session's stream is held: taking
// its events is what marks its replies read, so a session you are not
// looking at keeps its unread count.

const TITLE = document.title;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The hub's list (oldest first), by session id. */
let sessions = new Map();
/** The list's items, by session id. */
const entries = new Map();
/** What was typed in a session (and the id of a message not sent yet),
 * kept while another is open. Never stored. */
const drafts = new Map();
/** The open session has ended: its host is gone from the hub. */
let ended = false;
/** The open session has been on the list since it was opened, so its
 * leaving the list means it ended. */
let listedOpen = false;
/** The list was showing when this session opened: back is then the
 * browser's back. */
let cameFromList = false;

const sessionLabel = (s, id = "") => s?.name || (s?.session_id ?? id).slice(0, 8);
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
const howMany = (n) => Math.max(0, Math.floor(Number(n) || 0));

async function startHub() {
  showSignedIn();
  try {
    const r = await api("/sessions");
    if (r.ok) showSessions((await r.json()).sessions);
  } catch {
    // The stream brings the list.
  }
  if (!token) return; // refused: signed out
  listenHub();
  route();
}

/** Opens the session the address names (`#s=<id>`), or shows the list. */
function route() {
  if (!hub || !token) return;
  const id = new URLSearchParams(location.hash.slice(1)).get("s") ?? "";
  if (UUID.test(id)) openSession(id);
  else closeSession();
}

/** What shows: the list, or a session's conversation (on a wide screen,
 * both side by side). */
function showView() {
  const open = Boolean(openId);
  document.body.dataset.view = open ? "session" : "list";
  $("#sessions").hidden = false;
  logEl.hidden = !open;
  $("#composer").hidden = !open || ended;
  $("#claude").hidden = !open;
  $("#pick").hidden = open || sessions.size === 0;
  $("#back").hidden = !open;
  paintConnection();
  paintAttention();
}

/** The header, the back button, the title and the list's current item:
 * what waits in the sessions you are not looking at. */
function paintAttention() {
  const open = sessions.get(openId);
  const head = $("#session");
  head.textContent = openId ? sessionLabel(open, openId) : "";
  head.title = openId ? [open?.cwd, openId].filter(Boolean).join("\n") : "";
  let waiting = 0;
  let unread = 0;
  for (const s of sessions.values()) {
    if (s.session_id === openId) continue;
    waiting += howMany(s.pending);
    unread += howMany(s.unread);
  }
  const badge = $("#back-badge");
  badge.hidden = !(waiting || unread);
  badge.dataset.kind = waiting ? "pending" : "unread";
  badge.textContent = waiting ? `⚠ ${waiting}` : String(unread);
  const elsewhere = [waiting && plural(waiting, "prompt waiting", "prompts waiting"), unread && plural(unread, "new reply", "new replies")].filter(Boolean);
  $("#back").setAttribute("aria-label", elsewhere.length ? `Sessions (${elsewhere.join(", ")})` : "Sessions");
  const attention = waiting + unread + howMany(open?.pending);
  document.title = `${attention ? `(${attention}) ` : ""}${openId ? `${sessionLabel(open, openId)} · ` : ""}${TITLE}`;
  for (const [id, li] of entries) {
    if (id === openId) li.firstElementChild.setAttribute("aria-current", "page");
    else li.firstElementChild.removeAttribute("aria-current");
  }
}

/** The hub's list: each item updated in place (a focused one stays
 * focused), new ones added, ended ones removed. */
function showSessions(list) {
  if (!Array.isArray(list)) return;
  list = list.filter((s) => typeof s?.session_id === "string" && UUID.test(s.session_id));
  sessions = new Map(list.map((s) => [s.session_id, s]));
  const ul = $("#session-list");
  for (const [id, li] of entries) {
    if (sessions.has(id)) continue;
    li.remove();
    entries.delete(id);
  }
  list.forEach((s, i) => {
    let li = entries.get(s.session_id);
    if (!li) {
      li = el("li", {}, el("a", { class: "entry", href: `#s=${s.session_id}`, "data-session-id": s.session_id }));
      entries.set(s.session_id, li);
    }
    paintEntry(li.firstElementChild, s);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] ?? null);
  });
  $("#sessions-empty").hidden = sessions.size > 0;
  if (openId && sessions.has(openId)) listedOpen = true;
  else if (openId && listedOpen) sessionEnded();
  if (token) showView();
}

/** One session in the list: its name (else its id's start), where it
 * runs, whether Claude is busy, and what waits there. */
function paintEntry(a, s) {
  const state = s.state === "busy" || s.state === "idle" ? s.state : "unknown";
  const pending = howMany(s.pending);
  // The open session's replies are read as its stream brings them: a count
  // for it would only flash between a reply and its taking.
  const unread = s.session_id === openId && sessionOnline ? 0 : howMany(s.unread);
  a.dataset.state = state;
  a.dataset.pending = String(pending);
  a.dataset.unread = String(unread);
  a.classList.toggle("waiting", pending > 0);
  const id = s.name ? el("span", { class: "id" }, s.session_id.slice(0, 8)) : null;
  const parts = [
    el("span", { class: "top" }, el("span", { class: "name" }, sessionLabel(s)), el("span", { class: "state" }, state === "unknown" ? "" : state)),
    el("span", { class: "where" }, s.cwd ? el("span", { class: "cwd", title: s.cwd }, s.cwd) : null, id),
    pending || unread
      ? el(
          "span",
          { class: "badges" },
          pending ? el("span", { class: "badge pending" }, plural(pending, "prompt waiting", "prompts waiting")) : null,
          unread ? el("span", { class: "badge unread" }, plural(unread, "new reply", "new replies")) : null,
        )
      : null,
  ];
  a.replaceChildren(...parts.filter(Boolean));
}

/** Opens session `id`'s conversation: the host's page, through the hub. */
async function openSession(id) {
  if (id === openId) return showView();
  leaveSession();
  openId = sessionId = id;
  base = `/s/${id}`;
  listedOpen = sessions.has(id);
  const draft = drafts.get(id);
  drafts.delete(id);
  textEl.value = draft?.text ?? "";
  pending = draft?.pending ?? null;
  const gen = generation;
  showView();
  const get = (path) =>
    api(at(path))
      .then(async (r) => ({ r, body: await r.json().catch(() => ({})) }))
      .catch(() => null);
  const [status, permissions] = await Promise.all([get("/status"), get("/permissions")]);
  if (gen !== generation || !token) return; // another one opened, or signed out
  if (status?.r.status === 404) return sessionEnded();
  if (status?.r.ok) setClaude(status.body.claude?.state);
  try {
    backlog = JSON.parse(sessionStorage.getItem(storageKey()) ?? "[]");
  } catch {
    backlog = [];
  }
  if (permissions?.r.ok) stillPending.push(...(permissions.body.pending ?? []));
  listen();
}

/** Closes the open session: its stream ends (its replies count as unread
 * again), and what it showed goes. */
function leaveSession() {
  if (!openId) return;
  if (textEl.value || pending) drafts.set(openId, { text: textEl.value, pending });
  stopListening();
  generation++;
  replies.clear();
  cards.clear();
  seen.clear();
  mine.clear();
  lastEventId = 0;
  backlog = [];
  stillPending.length = 0;
  pending = null;
  sessionStream.failures = 0;
  logEl.replaceChildren();
  textEl.value = "";
  filesEl.value = "";
  showAttached();
  showError("");
  setClaude(undefined);
  setActivity(null);
  ended = false;
  sessionOnline = null;
  openId = sessionId = base = "";
}

function closeSession() {
  leaveSession();
  showView();
}

function sessionEnded() {
  if (!openId || ended) return;
  ended = true;
  stopListening();
  place(el("p", { class: "note ended" }, "This session has ended: its Claude Code is no longer running."));
  showView();
}

/** Signed out: the list and every session's drafts go. */
function forgetSessions() {
  stopHub();
  leaveSession();
  drafts.clear();
  sessions = new Map();
  entries.clear();
  $("#session-list").replaceChildren();
  $("#sessions-empty").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname);
}

function setListOnline(online) {
  listOnline = online;
  const note = $("#sessions-state");
  note.hidden = online !== false;
  note.textContent = online === false ? "(offline, reconnecting…)" : "";
  paintConnection();
}

/** The hub's stream: the whole list at once, then again on each change. */
const hubStream = new Follower({
  request: () => ["/events", {}],
  onEvent: (_, data) => {
    try {
      const e = JSON.parse(data);
      if (e.type === "sessions") showSessions(e.sessions);
    } catch (err) {
      console.error("bad list event", data, err);
    }
  },
  online: setListOnline,
});
function listenHub() {
  hubStream.start();
}

function stopHub() {
  hubStream.stop();
}

$("#back").addEventListener("click", () => {
  if (cameFromList) return history.back();
  history.pushState(null, "", location.pathname);
  route();
});

// --- starting -------------------------------------------------------------------

const codeInHash = () => new URLSearchParams(location.hash.slice(1)).get("code");

/** Trades a sign-in link's code for a token; false (and says why) if the
 * host refuses it. */
async function redeem(code) {
  // Out of the address bar (and history) before anything else.
  history.replaceState(null, "", location.pathname);
  let r;
  try {
    r = await fetch("/login", postJson({ code }));
  } catch {
    showSignedOut(`The ${server()} cannot be reached. ${openHint()}`);
    return false;
  }
  const answer = await r.json().catch(() => ({}));
  if (r.ok && typeof answer.token === "string") {
    saveToken(answer.token);
    return true;
  }
  dropToken();
  const why = answer.error ?? `sign-in failed (${r.status})`;
  showSignedOut(capitalized(why) + ".");
  return false;
}

async function start() {
  try {
    // Who the host is, for the header and the hints: no token needed. A
    // hub says it is one.
    const status = await (await fetch("/status")).json();
    hub = status.hub === true;
    sessionId = hub ? "" : status.sessionId ?? "";
    $("#session").textContent = sessionId.slice(0, 8);
  } catch {
    setConnected(false);
  }
  if (hub) document.body.classList.add("hub");
  const code = codeInHash();
  if (code && !(await redeem(code))) return;
  // Without a code, a token kept from before a reload signs in.
  if (!token) return showSignedOut(`This browser is not signed in. ${openHint()}`);
  if (hub) return startHub();
  // With the token, the status says what Claude is doing.
  const [status, permissions] = await Promise.all([api("/status").catch(() => null), api("/permissions").catch(() => null)]);
  if (!token) return; // refused: signed out
  if (status?.ok) setClaude((await status.json().catch(() => ({}))).claude?.state);
  try {
    backlog = JSON.parse(sessionStorage.getItem(storageKey()) ?? "[]");
  } catch {
    backlog = [];
  }
  if (permissions?.ok) stillPending.push(...((await permissions.json()).pending ?? []));
  showSignedIn();
  listen();
}

/** A reply's file: fetched with the token and saved from a blob URL, since
 * a plain link would carry no credential, and a credential must never go
 * into a URL. */
async function download(link) {
  if (link.getAttribute("aria-busy") === "true") return;
  link.setAttribute("aria-busy", "true");
  try {
    const r = await api(at(`/files/${encodeURIComponent(link.dataset.fileId)}`));
    if (r.status === 403) return; // signed out
    if (!r.ok) {
      const why = (await r.json().catch(() => ({}))).error ?? `the ${server()} answered ${r.status}`;
      return showError(`Not downloaded: ${why}.`);
    }
    const url = URL.createObjectURL(await r.blob());
    const save = el("a", { href: url, download: link.getAttribute("download") || "download", hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    // Later, not at once: the browser reads the blob after the click.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    showError("");
  } catch {
    showError(`Not downloaded: the ${server()} cannot be reached.`);
  } finally {
    link.removeAttribute("aria-busy");
  }
}

// --- sending ------------------------------------------------------------------

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = !message;
}

function newId() {
  // crypto.randomUUID needs a secure context; a tunnel's plain http is not one.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function showAttached() {
  const list = $("#attached");
  list.replaceChildren(...[...filesEl.files].map((f) => el("li", {}, `${f.name} (${size(f.size)})`)));
}

/** Posts message `m` to the host, with its id as the idempotency key. */
function post(m) {
  let body;
  const headers = { "idempotency-key": m.id };
  if (m.upload.length) {
    body = new FormData();
    body.append("content", m.text);
    body.append("chat_id", CHAT_ID);
    for (const f of m.upload) body.append("file", f, f.name);
  } else {
    body = JSON.stringify({ content: m.text, chat_id: CHAT_ID });
    headers["content-type"] = "application/json";
  }
  return api(`${m.base ?? base}/inject`, { method: "POST", headers, body });
}

/** Sends what is in the box. The box is emptied at once, so typing can go
 * on; if the host does not take the message, its text comes back. */
async function send() {
  if (sendEl.disabled) return;
  const files = [...filesEl.files];
  const typed = textEl.value;
  if (!typed.trim() && !files.length) return;
  const content = typed.trim() ? typed : `(${files.map((f) => f.name).join(", ")})`;
  if (pending?.content !== content) pending = { content, id: newId() };
  const attempt = pending;
  // On a hub, another session may be open by the time the answer comes.
  const gen = generation;
  const to = openId;
  sendEl.disabled = true;
  textEl.value = "";
  // Shown as it is sent, so a quick reply cannot land above it.
  const m = showMine({ id: pending.id, text: content, files: files.map((f) => f.name), upload: files, after: lastEventId, state: "sending" });
  try {
    let answer = {};
    try {
      const r = await post(m);
      answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(answer.error ?? `the ${server()} answered ${r.status}`);
    } catch (err) {
      // A receipt came first: the host has it, whatever became of its answer.
      if (m.state === "sending") throw err;
    }
    if (pending === attempt) pending = null;
    if (gen !== generation) {
      // Kept in its own session's storage: shown when it is opened again.
      accepted(m, answer);
      const draft = drafts.get(to);
      if (draft?.pending === attempt) draft.pending = null;
      return;
    }
    accepted(m, answer);
    filesEl.value = "";
    showAttached();
    showError("");
    if (answer.delivered === false) {
      place(el("p", { class: "note" }, `Filter ${answer.filter} kept that from Claude: ${answer.reason}`));
    }
  } catch (err) {
    mine.delete(m.id);
    m.node.remove();
    const why = err instanceof TypeError ? `the ${server()} cannot be reached` : err.message;
    if (gen !== generation) {
      // Back in its own session's box, for when it is opened again.
      const draft = drafts.get(to) ?? { text: "", pending: null };
      draft.text = draft.text ? `${typed}\n${draft.text}` : typed;
      draft.pending = attempt;
      drafts.set(to, draft);
      showError(`Not sent to ${sessionLabel(sessions.get(to), to)}: ${why}. Your message is back in its box there.`);
      return;
    }
    // Back in the box, before anything typed since.
    textEl.value = textEl.value ? `${typed}\n${textEl.value}` : typed;
    showError(`Not sent: ${why}. Your message is still here; send it again.`);
  } finally {
    sendEl.disabled = false;
    if (gen === generation) textEl.focus();
  }
}

$("#composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
textEl.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
filesEl.addEventListener("change", showAttached);

// A file's link, clicked or middle-clicked: fetched with the token.
for (const type of ["click", "auxclick"]) {
  logEl.addEventListener(type, (e) => {
    const link = e.target.closest?.("a.file");
    if (!link || (type === "auxclick" && e.button !== 1)) return;
    e.preventDefault();
    download(link);
  });
}
$("#sign-out").addEventListener("click", signOut);
// A new sign-in link opened in this tab changes only the fragment, which
// does not load the page again: load it, so its code is used.
addEventListener("hashchange", () => {
  if (codeInHash()) location.reload();
  else if (hub) {
    cameFromList = !openId;
    route();
  }
});

start();
