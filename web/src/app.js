// The chat page: sign-in, the room list, one open room (history, scroll-back, live
// messages) and the composer, over REST and STOMP (docs/protocol.md). Every message shown
// is keyed by its seq; a reconnect resumes after the highest seq shown, so a dropped
// connection or a draining instance loses nothing and shows nothing twice.

import { Client, ReconnectionTimeMode } from "@stomp/stompjs";
import SockJS from "sockjs-client";

import { Api, ApiError, PAGE_SIZE, detectMode } from "./api.js";
import { openSenderId, randomKey, takeTokenFromFragment, tokenClaims, visibleLength } from "./identity.js";
import { Timeline } from "./timeline.js";

const MAX_CONTENT = 4000;
const MAX_NICKNAME = 50;
/** Errors after which the same SEND, with the same idempotency key, is worth retrying. */
const RETRYABLE = new Set(["RATE_LIMITED", "STORE_UNAVAILABLE", "STORE_OUTCOME_UNKNOWN"]);
/** ERROR close reasons that need a new token before reconnecting makes sense. */
const NEEDS_TOKEN = new Set(["token_expired", "unauthenticated"]);
const ROOM_POLL_MS = 15000;
/** At most one typing SEND this often, however fast the keys go. */
const TYPING_SEND_MS = 2000;
/** How long "bob is typing…" stays after bob's last typing event. */
const TYPING_SHOW_MS = 3000;
/** At most one read-cursor SEND per room this often (later ones are coalesced). */
const READ_SEND_MS = 1000;
/** How often the rooms' lastSeq is asked for, for the unread badges of rooms not open. */
const ACTIVITY_POLL_MS = 5000;

const $ = (id) => document.getElementById(id);

/** A DOM element with attributes and children (strings become text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

const state = {
  /** "open", "jwt" or "unknown" (the server did not say). */
  mode: "unknown",
  /** Who we are: { nickname, senderId } in open mode, { token, claims, nickname } in jwt mode. */
  me: null,
  api: null,
  client: null,
  /** Whether a STOMP session was ever connected since sign-in: the next one is a resume. */
  wasConnected: false,
  connected: false,
  instance: null,
  /** CONNECTED `user-name`: the user id the server verified (jwt mode), else null. */
  verifiedUser: null,
  /** Why the server closed the last connection, for the status line. */
  closeReason: null,
  rooms: new Map(),
  lastRoomId: null,
  moreRooms: false,
  /** The open room: { id, name, timeline, ready, subscription, receipt, reachedStart, loadingOlder }. */
  room: null,
  /** Messages not yet confirmed stored, by idempotency key. */
  pending: new Map(),
  /** Which pending message a SEND receipt belongs to. */
  pendingByReceipt: new Map(),
  receiptCounter: 0,
  roomPoll: null,
  /** When the last typing SEND went out (Date.now()), for the throttle. */
  typingSentAt: 0,
  /**
   * Unread bookkeeping by room id: { lastSeq, lastReadSeq, cursorKnown, sentSeq, sentAt,
   * timer }. lastSeq is the highest seq seen, lastReadSeq the read cursor (null: unknown);
   * the badge shows lastSeq - lastReadSeq.
   */
  unread: new Map(),
  activityPoll: null,
};

// ---------------------------------------------------------------- connection status

function setStatus(kind, detail) {
  const node = document.querySelector('[data-testid="connection-status"]');
  node.dataset.state = kind;
  if (state.instance) node.dataset.instance = state.instance;
  else delete node.dataset.instance;
  const instance = state.instance ? ` · instance ${state.instance}` : "";
  const text = {
    offline: "Not connected",
    connecting: "Connecting…",
    connected: `Connected${instance}`,
    resumed: `Resumed${instance}`,
    reconnecting: "Reconnecting…",
    stopped: "Disconnected",
  }[kind];
  node.textContent = detail ? `${text} (${detail})` : text;
}

/** CONNECTED `session` is `<instance>-<connection>`: the part before the last dash. */
function instanceOf(session) {
  if (!session) return null;
  const cut = session.lastIndexOf("-");
  return cut > 0 ? session.slice(0, cut) : session;
}

// ---------------------------------------------------------------- error banner

function showError(text, code) {
  const banner = $("error-banner");
  banner.textContent = text;
  if (code) banner.dataset.code = code;
  else delete banner.dataset.code;
  show(banner, true);
}

function clearError() {
  const banner = $("error-banner");
  banner.textContent = "";
  delete banner.dataset.code;
  show(banner, false);
}

// ---------------------------------------------------------------- sign-in

function applyMode(mode) {
  state.mode = mode;
  show($("login-open-warning"), mode === "open");
  show($("login-mode-unknown"), mode === "unknown");
  show($("token-field"), mode !== "open");
  // The field that matters first.
  const form = $("login-form");
  if (mode === "jwt") form.prepend($("token-field"));
  else form.prepend($("nickname-field"));
  $("nickname-field").querySelector("label").textContent =
    mode === "jwt" ? "Display name (optional: used when your token carries no name)" : "Nickname";
  const note = $("mode-note");
  if (mode === "open") {
    note.textContent = "Open mode: not secure. Anyone can post under any name.";
    note.className = "mode warning";
  } else if (mode === "jwt") {
    note.textContent = "Signed in with a token";
    note.className = "mode";
  }
}

function showLogin(message) {
  show($("login"), true);
  show($("chat"), false);
  // The sign-in form carries the full open-mode warning itself.
  show($("mode-note"), false);
  const error = $("login-error");
  error.textContent = message || "";
  show(error, Boolean(message));
  const first = state.mode === "jwt" ? $("token") : $("nickname");
  first.focus();
}

function signIn(event) {
  event.preventDefault();
  const nickname = $("nickname").value.trim();
  const token = $("token").value.trim();
  const fail = (message) => showLogin(message);
  if (state.mode !== "open" && token) {
    const claims = tokenClaims(token);
    if (!claims) return fail("That does not look like a token (three parts separated by dots).");
    if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now() - 30000) {
      return fail(`This token expired at ${new Date(claims.exp * 1000).toLocaleString()}; ask for a new one.`);
    }
    const name = claims.name || claims.preferred_username || nickname || `user ${claims.sub}`;
    if (nickname.length > MAX_NICKNAME) return fail(`A display name has at most ${MAX_NICKNAME} characters.`);
    const display = String(name).slice(0, MAX_NICKNAME);
    // The id is used only if the server turns out to be open (CONNECTED names no user).
    start({ token, claims, nickname: display, senderId: openSenderId(display) });
    return;
  }
  if (state.mode === "jwt") return fail("This server needs a token: paste it above.");
  if (!nickname) return fail("Enter a nickname.");
  if ([...nickname].length > MAX_NICKNAME) return fail(`A nickname has at most ${MAX_NICKNAME} characters.`);
  try {
    localStorage.setItem("chat-service.nickname", nickname);
  } catch {
    // Not kept: fine.
  }
  start({ nickname, senderId: openSenderId(nickname) });
}

/** Signs in (or, after a token expired, carries on with a fresh token and the same rooms). */
function start(me) {
  // A fresh token after an expired one carries on; a first sign-in (or one after a refused
  // token) starts from the room list.
  const resuming = state.me !== null && state.wasConnected;
  state.me = me;
  state.api = new Api(() => (state.me && state.me.token) || null);
  show($("login"), false);
  show($("chat"), true);
  show($("token-field"), state.mode !== "open");
  show($("mode-note"), true);
  const who = $("who");
  $("who-name").textContent = me.token ? `Signed in as ${me.nickname}` : `Posting as ${me.nickname}`;
  show(who, true);
  if (!resuming) {
    state.wasConnected = false;
    clearInterval(state.roomPoll);
    clearInterval(state.activityPoll);
    loadRooms(true);
    state.roomPoll = setInterval(pollRooms, ROOM_POLL_MS);
    state.activityPoll = setInterval(pollActivity, ACTIVITY_POLL_MS);
  }
  connect();
}

function signOut() {
  stopClient();
  clearInterval(state.roomPoll);
  clearInterval(state.activityPoll);
  for (const cursor of state.unread.values()) clearTimeout(cursor.timer);
  state.unread.clear();
  if (state.room) clearTypers(state.room);
  state.me = null;
  state.room = null;
  state.rooms.clear();
  state.lastRoomId = null;
  state.pending.clear();
  state.pendingByReceipt.clear();
  state.instance = null;
  state.verifiedUser = null;
  $("room-list").replaceChildren();
  $("message-list").replaceChildren();
  $("pending-list").replaceChildren();
  $("room-title").textContent = "Pick a room";
  renderPresence(null);
  renderTypers(null);
  document.body.classList.remove("in-room");
  setComposerEnabled(false);
  clearError();
  show($("chat"), false);
  show($("who"), false);
  setStatus("offline");
  showLogin();
}

// ---------------------------------------------------------------- STOMP

/**
 * SockJS instead of a raw WebSocket when the browser has no WebSocket (or a proxy on the way
 * blocks it, which the page cannot see: `?transport=sockjs` forces it). SockJS then picks
 * the best transport the server and the network allow (websocket, xhr-streaming, xhr
 * polling) on the same `/ws` endpoint.
 */
// The transports chat-server offers (no iframe, eventsource or jsonp ones).
const SOCKJS_TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling"];

function useSockJS() {
  return typeof window.WebSocket !== "function" || new URLSearchParams(location.search).get("transport") === "sockjs";
}

function brokerUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function connect() {
  stopClient();
  setStatus(state.wasConnected ? "reconnecting" : "connecting");
  const transport = useSockJS()
    ? { webSocketFactory: () => new SockJS(`${location.origin}/ws`, null, { transports: SOCKJS_TRANSPORTS }) }
    : { brokerURL: brokerUrl() };
  const client = new Client({
    ...transport,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    reconnectDelay: 500,
    reconnectTimeMode: ReconnectionTimeMode.EXPONENTIAL,
    maxReconnectDelay: 10000,
    connectionTimeout: 10000,
    discardWebsocketOnCommFailure: true,
    debug: () => {},
  });
  client.beforeConnect = () => {
    const me = state.me;
    const headers = {};
    if (me && me.token) headers.Authorization = `Bearer ${me.token}`;
    // Who we are for presence and typing on an open server (a jwt server ignores both and
    // takes the token's user): the same id the page sends messages as.
    if (me && me.senderId != null) {
      headers.login = String(me.senderId);
      headers["x-nickname"] = me.nickname;
    }
    client.connectHeaders = headers;
  };
  client.onConnect = (frame) => onConnected(client, frame);
  client.onStompError = (frame) => onServerError(client, frame);
  client.onWebSocketClose = () => onClosed(client);
  state.client = client;
  client.activate();
}

function stopClient() {
  const client = state.client;
  state.client = null;
  state.connected = false;
  if (client) client.deactivate();
}

function onConnected(client, frame) {
  if (client !== state.client) return;
  const resumed = state.wasConnected;
  state.connected = true;
  state.wasConnected = true;
  state.instance = instanceOf(frame.headers.session);
  state.verifiedUser = frame.headers["user-name"] || null;
  state.closeReason = null;
  setStatus(resumed ? "resumed" : "connected");
  // First, so that no error about what follows is dropped (docs/protocol.md, section 2).
  client.subscribe("/user/queue/errors", (message) => onAppError(message), { id: "errors" });
  // Read cursors of all our sessions, then the counts as they are now (start-up and every
  // reconnect: what was read elsewhere meanwhile is in them).
  client.subscribe("/user/queue/read", (message) => onReadEvent(message), { id: "read" });
  loadUnread();
  if (state.room && state.room.ready) {
    subscribeRoom(state.room);
    markRead(state.room);
  }
  // Whatever was sent but not confirmed goes again, with its key: stored at most once.
  for (const item of state.pending.values()) {
    if (item.state === "sending") publish(item);
  }
}

function onClosed(client) {
  if (client !== state.client) return;
  const wasUp = state.connected;
  state.connected = false;
  if (state.room) {
    state.room.subscription = null;
    state.room.presenceSubscription = null;
    state.room.typingSubscription = null;
  }
  // Receipts of this connection will never come: unanswered SENDs go again on the next.
  state.pendingByReceipt.clear();
  for (const item of state.pending.values()) item.receipt = null;
  if (client.active) {
    setStatus("reconnecting", state.closeReason || (wasUp ? "the connection dropped" : "the server does not answer yet"));
  }
}

function onServerError(client, frame) {
  if (client !== state.client) return;
  const reason = frame.headers["x-close-reason"] || "";
  const text = frame.headers.message || frame.body || "the server closed the connection";
  if (NEEDS_TOKEN.has(reason) || (!reason && /authentication|token/i.test(text))) {
    stopClient();
    setStatus("stopped", "sign-in needed");
    if (!state.me || !state.me.token) {
      // Open mode was assumed, yet the server wants a token.
      applyMode("jwt");
    }
    showLogin(
      reason === "token_expired"
        ? "Your token expired. Paste a fresh one to carry on; nothing shown is lost."
        : `The server refused to sign you in: ${text}`,
    );
    return;
  }
  state.closeReason = reason === "server_shutdown" ? "the instance is shutting down" : text;
  setStatus("reconnecting", state.closeReason);
}

// ---------------------------------------------------------------- errors queue

function onAppError(message) {
  let error;
  try {
    error = JSON.parse(message.body);
  } catch {
    return;
  }
  const receipt = error.receiptId;
  // Presence and typing are extras: a refused typing SEND (RATE_LIMITED, say) or presence
  // watch is not worth a banner; the room's own subscription reports what matters.
  if (receipt && /^(typing|presence|typers|read)-/.test(receipt)) return;
  const item = receipt ? state.pendingByReceipt.get(receipt) : null;
  if (item) {
    state.pendingByReceipt.delete(receipt);
    item.receipt = null;
    if (RETRYABLE.has(error.code)) {
      item.attempts += 1;
      const delay = Math.min(15000, 500 * 2 ** item.attempts);
      showError(`Not sent yet (${error.message}); trying again in ${Math.round(delay / 1000)} s.`, error.code);
      item.timer = setTimeout(() => {
        item.timer = null;
        if (state.pending.has(item.key) && !item.receipt) publish(item);
      }, delay);
      return;
    }
    dropPending(item);
    showError(`Not sent: ${error.message}`, error.code);
    // Give the text back so it can be fixed and sent again.
    const input = $("message-input");
    if (!input.value && state.room && state.room.id === item.roomId) {
      input.value = item.content;
      updateCounter();
    }
    return;
  }
  const room = state.room;
  if (room && receipt && receipt === room.receipt) {
    if (error.code === "INVALID_RESUME") {
      // Our position comes from another history (a restored database, a restarted
      // in-memory server): start the room over from the server's view.
      openRoom(room.id, true);
      return;
    }
    room.subscription = null;
    showError(`Cannot follow this room: ${error.message}`, error.code);
    return;
  }
  showError(error.message, error.code);
}

// ---------------------------------------------------------------- rooms

function roomLabel(room) {
  return room.visibility === "private" ? `${room.name} (private)` : room.name;
}

/**
 * Adds a room to the list or updates it. `paging` false: the room came from elsewhere than
 * the paged room listing (GET /api/me/rooms), so it does not move where the next page starts.
 */
function renderRoom(room, paging = true) {
  state.rooms.set(room.id, { ...state.rooms.get(room.id), ...room });
  let item = $("room-list").querySelector(`[data-room-id="${room.id}"]`);
  if (!item) {
    item = el(
      "button",
      { type: "button", class: "room-button", "data-room-id": room.id },
      el("span", { class: "room-name" }),
      el("span", { class: "unread-badge", "data-testid": "unread-badge", hidden: true }),
    );
    item.addEventListener("click", () => openRoom(room.id));
    $("room-list").append(el("li", {}, item));
  }
  item.querySelector(".room-name").textContent = roomLabel(room);
  if (state.room && state.room.id === room.id) item.setAttribute("aria-current", "true");
  if (paging) state.lastRoomId = Math.max(state.lastRoomId || 0, room.id);
  show($("rooms-empty"), false);
  if (Number.isSafeInteger(room.lastSeq)) noteRoomSeq(room.id, room.lastSeq, true);
  renderBadge(room.id);
}

// ---------------------------------------------------------------- unread counts

function cursorOf(roomId) {
  let cursor = state.unread.get(roomId);
  if (!cursor) {
    cursor = { lastSeq: null, lastReadSeq: null, cursorKnown: false, sentSeq: 0, sentAt: 0, timer: null };
    state.unread.set(roomId, cursor);
  }
  return cursor;
}

/**
 * The room has messages up to `seq`. `listed`: seen in a room listing, not as a message;
 * a room whose read cursor we do not know then starts with no badge (its unread count is
 * what arrives from now on).
 */
function noteRoomSeq(roomId, seq, listed = false) {
  const cursor = cursorOf(roomId);
  if (cursor.lastReadSeq == null && !cursor.cursorKnown) {
    cursor.lastReadSeq = listed ? seq : Math.max(0, (cursor.lastSeq ?? seq - 1));
  }
  cursor.lastSeq = Math.max(cursor.lastSeq ?? 0, seq);
  renderBadge(roomId);
}

/** The read cursor moved (never back: a lower value changes nothing). */
function noteReadSeq(roomId, seq) {
  const cursor = cursorOf(roomId);
  cursor.lastReadSeq = cursor.cursorKnown ? Math.max(cursor.lastReadSeq ?? 0, seq) : seq;
  cursor.cursorKnown = true;
  renderBadge(roomId);
}

function unreadCount(roomId) {
  const cursor = state.unread.get(roomId);
  if (!cursor || cursor.lastSeq == null || cursor.lastReadSeq == null) return 0;
  return Math.max(0, cursor.lastSeq - cursor.lastReadSeq);
}

function renderBadge(roomId) {
  const badge = $("room-list").querySelector(`[data-room-id="${roomId}"] .unread-badge`);
  if (!badge) return;
  const count = unreadCount(roomId);
  badge.textContent = count ? String(count) : "";
  badge.setAttribute("aria-label", count === 1 ? "1 unread message" : `${count} unread messages`);
  show(badge, count > 0);
}

/** GET /api/me/rooms: the server's counts, merged into the list (start-up and reconnect). */
async function loadUnread() {
  if (!state.api || !state.me) return;
  let rooms;
  try {
    rooms = await state.api.myRooms(state.me.token ? null : state.me.senderId);
  } catch {
    // Badges are an extra: the room list says what matters.
    return;
  }
  for (const room of rooms) {
    if (!Number.isSafeInteger(room.id)) continue;
    const cursor = cursorOf(room.id);
    if (Number.isSafeInteger(room.lastSeq)) cursor.lastSeq = Math.max(cursor.lastSeq ?? 0, room.lastSeq);
    if (Number.isSafeInteger(room.lastReadSeq)) noteReadSeq(room.id, room.lastReadSeq);
    if (state.rooms.has(room.id)) renderBadge(room.id);
    else renderRoom(room, false);
  }
}

/** Activity in rooms not open: their lastSeq, a few seconds apart while the page is seen. */
async function pollActivity() {
  if (!state.api || document.hidden) return;
  let rooms;
  try {
    rooms = await state.api.roomActivity();
  } catch {
    return;
  }
  for (const room of rooms) {
    if (state.rooms.has(room.id) && Number.isSafeInteger(room.lastSeq)) noteRoomSeq(room.id, room.lastSeq, true);
  }
}

function onReadEvent(message) {
  const event = parseBody(message);
  if (!event || !Number.isSafeInteger(event.chatRoomId) || !Number.isSafeInteger(event.lastReadSeq)) return;
  noteReadSeq(event.chatRoomId, event.lastReadSeq);
}

/**
 * The open room shows its newest message: move the read cursor there, at most one SEND per
 * room every READ_SEND_MS (the newest seq when it goes), never to a lower seq than sent.
 */
function markRead(room) {
  if (!room || state.room !== room || !room.ready || document.hidden) return;
  const newest = room.timeline.newest;
  const cursor = cursorOf(room.id);
  if (newest == null || newest <= cursor.sentSeq || cursor.timer) return;
  if (cursor.cursorKnown && newest <= (cursor.lastReadSeq ?? 0)) return;
  const wait = cursor.sentAt + READ_SEND_MS - Date.now();
  if (wait <= 0) return sendRead(room);
  cursor.timer = setTimeout(() => {
    cursor.timer = null;
    if (state.room === room) markRead(room);
  }, wait);
}

function sendRead(room) {
  const client = state.client;
  if (!client || !state.connected) return;
  const cursor = cursorOf(room.id);
  const seq = room.timeline.newest;
  cursor.sentSeq = seq;
  cursor.sentAt = Date.now();
  state.receiptCounter += 1;
  client.publish({
    destination: "/app/chat.read",
    headers: { receipt: `read-${state.receiptCounter}`, "content-type": "application/json" },
    body: JSON.stringify({ chatRoomId: room.id, seq }),
  });
  // Read here and now: the badge goes without waiting for the server's event.
  noteReadSeq(room.id, seq);
}

async function loadRooms(first) {
  try {
    const { rooms, more } = await state.api.rooms(first ? null : state.lastRoomId);
    rooms.forEach(renderRoom);
    state.moreRooms = more;
    show($("rooms-more"), more);
    show($("rooms-empty"), state.rooms.size === 0);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return tokenRefused(error);
    roomError(`Could not load the rooms: ${error.message}`);
  }
}

/** New rooms have larger ids: ask for the ones after the last we know. */
async function pollRooms() {
  if (!state.api || state.moreRooms || document.hidden) return;
  await loadRooms(state.lastRoomId == null);
}

function roomError(text) {
  const node = $("room-create-error");
  node.textContent = text;
  show(node, Boolean(text));
}

async function createRoom(event) {
  event.preventDefault();
  const name = $("room-create-name").value.trim();
  if (!name) return roomError("Give the room a name.");
  roomError("");
  const visibility = $("room-private").checked ? "private" : "public";
  $("room-create-submit").disabled = true;
  try {
    const room = await state.api.createRoom(name, visibility);
    renderRoom(room);
    $("room-create-name").value = "";
    openRoom(room.id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return tokenRefused(error);
    roomError(`Could not create the room: ${error.message}`);
  } finally {
    $("room-create-submit").disabled = false;
  }
}

function tokenRefused(error) {
  stopClient();
  setStatus("stopped", "sign-in needed");
  applyMode("jwt");
  showLogin(`The server refused the token: ${error.message}`);
}

// ---------------------------------------------------------------- the open room

function setComposerEnabled(enabled) {
  $("message-input").disabled = !enabled;
  $("message-send").disabled = !enabled;
}

async function openRoom(roomId, restart = false) {
  const previous = state.room;
  if (previous && previous.id === roomId && !restart) {
    document.body.classList.add("in-room");
    $("message-input").focus();
    return;
  }
  if (previous) {
    for (const subscription of [previous.subscription, previous.presenceSubscription, previous.typingSubscription]) {
      if (!subscription) continue;
      try {
        subscription.unsubscribe();
      } catch {
        // The connection is gone already.
      }
    }
    clearTypers(previous);
  }
  const known = state.rooms.get(roomId);
  const room = {
    id: roomId,
    name: known ? known.name : `Room ${roomId}`,
    timeline: new Timeline(),
    ready: false,
    subscription: null,
    receipt: null,
    reachedStart: false,
    loadingOlder: false,
    presenceSubscription: null,
    typingSubscription: null,
    /** Who is here, by user id (a string): { nickname }; null until the first snapshot. */
    members: null,
    /** Who is typing, by user id (a string): { nickname, timer }. */
    typers: new Map(),
  };
  state.room = room;
  renderPresence(room);
  renderTypers(room);
  for (const button of $("room-list").querySelectorAll("[data-room-id]")) {
    if (Number(button.dataset.roomId) === roomId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  $("room-title").textContent = known ? roomLabel(known) : room.name;
  $("message-list").replaceChildren();
  renderPending();
  clearError();
  show($("load-older"), false);
  show($("history-edge"), false);
  document.body.classList.add("in-room");
  // Open while disconnected too: what is sent then goes out on the next connection.
  setComposerEnabled(true);
  try {
    const page = await state.api.history(roomId);
    if (state.room !== room) return;
    page.forEach((message) => addMessage(room, message));
    room.reachedStart = page.length < PAGE_SIZE || page[0].seq <= 1;
    updateHistoryEdge(room);
    scrollToBottom();
  } catch (error) {
    if (state.room !== room) return;
    if (error instanceof ApiError && error.status === 401) return tokenRefused(error);
    showError(`Cannot open this room: ${error.message}`, error.code);
    return;
  }
  room.ready = true;
  if (state.connected) subscribeRoom(room);
  markRead(room);
  $("message-input").focus();
  fillViewport(room);
}

/** Subscribes to the open room, resuming after the highest seq shown (0: an empty room). */
function subscribeRoom(room) {
  const client = state.client;
  if (!client || !state.connected) return;
  state.receiptCounter += 1;
  room.receipt = `room-${room.id}-${state.receiptCounter}`;
  room.subscription = client.subscribe(
    `/topic/chatroom/${room.id}`,
    (frame) => {
      if (state.room !== room) return;
      let message;
      try {
        message = JSON.parse(frame.body);
      } catch {
        return;
      }
      if (message.chatRoomId !== room.id) return;
      const stick = nearBottom();
      addMessage(room, message);
      // Their message is here: they are done typing it.
      if (message.senderId != null) dropTyper(room, String(message.senderId));
      if (stick) scrollToBottom();
      markRead(room);
    },
    {
      id: room.receipt,
      receipt: room.receipt,
      "x-resume-after": String(room.timeline.newest ?? 0),
    },
  );
  // After the room itself, so that the snapshot counts us in.
  const presence = `presence-${room.id}-${state.receiptCounter}`;
  room.presenceSubscription = client.subscribe(
    `/topic/chatroom/${room.id}/presence`,
    (frame) => onPresence(room, frame),
    { id: presence, receipt: presence },
  );
  const typers = `typers-${room.id}-${state.receiptCounter}`;
  room.typingSubscription = client.subscribe(
    `/topic/chatroom/${room.id}/typing`,
    (frame) => onTyping(room, frame),
    { id: typers, receipt: typers },
  );
}

// ---------------------------------------------------------------- presence and typing

/** Our user id as the server knows it for presence and typing, as a string. */
function myUserId() {
  if (state.verifiedUser) return state.verifiedUser;
  return state.me && state.me.senderId != null ? String(state.me.senderId) : null;
}

function parseBody(frame) {
  try {
    const body = JSON.parse(frame.body);
    return body && typeof body === "object" ? body : null;
  } catch {
    return null;
  }
}

/** A snapshot replaces the list (also after a reconnect); join and leave change it. */
function onPresence(room, frame) {
  if (state.room !== room) return;
  const event = parseBody(frame);
  if (!event) return;
  if (event.type === "snapshot" && Array.isArray(event.members)) {
    room.members = new Map(event.members.map((member) => [String(member.userId), { nickname: member.nickname }]));
  } else if (event.type === "join" && room.members) {
    room.members.set(String(event.userId), { nickname: event.nickname });
  } else if (event.type === "leave" && room.members) {
    room.members.delete(String(event.userId));
    dropTyper(room, String(event.userId));
  } else {
    return;
  }
  renderPresence(room);
}

function renderPresence(room) {
  const box = $("presence");
  if (!room || !room.members) {
    show(box, false);
    $("presence-list").replaceChildren();
    return;
  }
  const me = myUserId();
  const members = [...room.members.entries()].sort(([a, x], [b, y]) => {
    // Ourselves last; the others by name.
    if ((a === me) !== (b === me)) return a === me ? 1 : -1;
    return String(x.nickname).localeCompare(String(y.nickname));
  });
  $("presence-count").textContent = `${members.length} here:`;
  $("presence-list").replaceChildren(
    ...members.map(([userId, member]) =>
      el(
        "li",
        { "data-testid": "presence-member", "data-user-id": userId, class: userId === me ? "you" : false },
        String(member.nickname),
        userId === me ? " (you)" : "",
      ),
    ),
  );
  show(box, true);
}

function onTyping(room, frame) {
  if (state.room !== room) return;
  const event = parseBody(frame);
  if (!event || event.chatRoomId !== room.id || event.userId == null) return;
  const userId = String(event.userId);
  if (userId === myUserId()) return;
  const known = room.typers.get(userId);
  if (known) clearTimeout(known.timer);
  room.typers.set(userId, {
    nickname: String(event.nickname),
    timer: setTimeout(() => dropTyper(room, userId), TYPING_SHOW_MS),
  });
  renderTypers(room);
}

function dropTyper(room, userId) {
  const typer = room.typers.get(userId);
  if (!typer) return;
  clearTimeout(typer.timer);
  room.typers.delete(userId);
  if (state.room === room) renderTypers(room);
}

function clearTypers(room) {
  for (const typer of room.typers.values()) clearTimeout(typer.timer);
  room.typers.clear();
}

function renderTypers(room) {
  const node = $("typing-indicator");
  const names = room ? [...room.typers.values()].map((typer) => typer.nickname) : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  node.textContent = text;
  show(node, Boolean(text));
}

/** The input changed: tell the room we are typing, at most once every TYPING_SEND_MS. */
function noteTyping() {
  const room = state.room;
  const client = state.client;
  if (!room || !room.ready || !client || !state.connected) return;
  if (!$("message-input").value.trim()) return;
  const now = Date.now();
  if (now - state.typingSentAt < TYPING_SEND_MS) return;
  state.typingSentAt = now;
  state.receiptCounter += 1;
  client.publish({
    destination: "/app/chat.typing",
    headers: { receipt: `typing-${state.receiptCounter}`, "content-type": "application/json" },
    body: JSON.stringify({ chatRoomId: room.id }),
  });
}

function isMine(message) {
  const me = state.me;
  if (!me) return false;
  if (state.verifiedUser) return String(message.senderId) === state.verifiedUser;
  if (me.token && me.claims && message.senderId != null && String(me.claims.sub) === String(message.senderId)) return true;
  return message.senderId === me.senderId && message.senderNickname === me.nickname;
}

function messageElement(message) {
  const created = new Date(message.createdAt);
  const time = Number.isNaN(created.getTime())
    ? ""
    : created.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return el(
    "li",
    {
      class: isMine(message) ? "message mine" : "message",
      "data-seq": message.seq,
      "data-message-id": message.messageId,
    },
    el(
      "p",
      { class: "meta" },
      el("span", { class: "sender" }, message.senderNickname),
      " ",
      el("time", { datetime: message.createdAt, title: created.toLocaleString() }, time),
    ),
    el("p", { class: "content" }, message.content),
  );
}

/** Puts a message where its seq says, once. */
function addMessage(room, message) {
  const index = room.timeline.insert(message);
  if (index < 0) return;
  noteRoomSeq(room.id, message.seq);
  const list = $("message-list");
  const node = messageElement(message);
  list.insertBefore(node, list.children[index] || null);
  if (room.timeline.size === 1) updateHistoryEdge(room);
  if (isMine(message)) settlePendingFor(message);
}

function nearBottom() {
  const scroller = $("scroller");
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function scrollToBottom() {
  const scroller = $("scroller");
  scroller.scrollTop = scroller.scrollHeight;
}

function updateHistoryEdge(room) {
  show($("load-older"), !room.reachedStart);
  const edge = $("history-edge");
  edge.textContent = room.timeline.size ? "The beginning of this room." : "No messages yet: say hello.";
  show(edge, room.reachedStart);
}

/** Scroll-back: the page older than the oldest message shown, keeping the view in place. */
async function loadOlder() {
  const room = state.room;
  if (!room || room.reachedStart || room.loadingOlder || room.timeline.oldest == null) return;
  room.loadingOlder = true;
  $("load-older").disabled = true;
  try {
    const page = await state.api.history(room.id, room.timeline.oldest);
    if (state.room !== room) return;
    const scroller = $("scroller");
    const before = scroller.scrollHeight;
    page.forEach((message) => addMessage(room, message));
    scroller.scrollTop += scroller.scrollHeight - before;
    room.reachedStart = page.length < PAGE_SIZE || page[0].seq <= 1;
    updateHistoryEdge(room);
  } catch (error) {
    if (state.room === room) showError(`Could not load older messages: ${error.message}`, error.code);
  } finally {
    room.loadingOlder = false;
    $("load-older").disabled = false;
  }
  fillViewport(room);
}

/** While the messages do not fill the view there is nothing to scroll: load more. */
function fillViewport(room) {
  const scroller = $("scroller");
  if (state.room === room && !room.reachedStart && scroller.scrollHeight <= scroller.clientHeight + 10) {
    loadOlder();
  }
}

// ---------------------------------------------------------------- sending

function sendBody(item) {
  const me = state.me;
  const body = {
    chatRoomId: item.roomId,
    senderNickname: me.nickname,
    content: item.content,
    messageType: "TEXT",
  };
  // A server that verified a token takes the sender from it; an open one needs it here.
  if (!state.verifiedUser) body.senderId = me.senderId;
  return JSON.stringify(body);
}

function publish(item) {
  const client = state.client;
  if (!client || !state.connected) return;
  state.receiptCounter += 1;
  const receipt = `send-${state.receiptCounter}`;
  item.receipt = receipt;
  state.pendingByReceipt.set(receipt, item);
  client.watchForReceipt(receipt, () => {
    state.pendingByReceipt.delete(receipt);
    if (item.receipt !== receipt) return;
    item.receipt = null;
    // Stored: it will come on the room topic; until then it stays shown as sending.
    item.state = "stored";
    if (!$("error-banner").hidden && RETRYABLE.has($("error-banner").dataset.code)) clearError();
    item.timer = setTimeout(() => dropPending(item), 10000);
  });
  client.publish({
    destination: "/app/chat.sendMessage",
    headers: { receipt, "x-idempotency-key": item.key, "content-type": "application/json" },
    body: sendBody(item),
  });
}

function sendMessage(event) {
  if (event) event.preventDefault();
  const input = $("message-input");
  const room = state.room;
  if (!room || input.disabled) return;
  const content = input.value;
  if (!content.trim()) return;
  clearError();
  const item = {
    key: randomKey(),
    roomId: room.id,
    content,
    state: "sending",
    receipt: null,
    attempts: 0,
    timer: null,
  };
  state.pending.set(item.key, item);
  input.value = "";
  updateCounter();
  renderPending();
  publish(item);
  if (nearBottom()) scrollToBottom();
}

function dropPending(item) {
  if (item.timer) clearTimeout(item.timer);
  if (item.receipt) state.pendingByReceipt.delete(item.receipt);
  state.pending.delete(item.key);
  renderPending();
}

/** One's own message arrived on the topic: it no longer needs its "sending" line. */
function settlePendingFor(message) {
  const content = String(message.content);
  for (const item of state.pending.values()) {
    if (item.roomId === message.chatRoomId && item.content.trim() === content) {
      if (item.state === "stored") dropPending(item);
      else item.hidden = true;
      renderPending();
      return;
    }
  }
}

function renderPending() {
  const list = $("pending-list");
  const room = state.room;
  const items = [...state.pending.values()].filter((item) => room && item.roomId === room.id && !item.hidden);
  list.replaceChildren(
    ...items.map((item) =>
      el(
        "li",
        { class: "message mine pending", "data-key": item.key },
        el("p", { class: "meta" }, el("span", { class: "sender" }, state.me.nickname), " ", "sending…"),
        el("p", { class: "content" }, item.content),
      ),
    ),
  );
}

function updateCounter() {
  const length = visibleLength($("message-input").value);
  const counter = $("counter");
  counter.textContent = length > MAX_CONTENT - 500 ? `${length} / ${MAX_CONTENT}` : "";
  counter.classList.toggle("over", length > MAX_CONTENT);
}

// ---------------------------------------------------------------- start-up

function wire() {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("room-create-form").addEventListener("submit", createRoom);
  $("rooms-more").addEventListener("click", () => loadRooms(false));
  $("composer").addEventListener("submit", sendMessage);
  $("load-older").addEventListener("click", loadOlder);
  $("back-to-rooms").addEventListener("click", () => {
    document.body.classList.remove("in-room");
    const current = $("room-list").querySelector('[aria-current="true"]');
    (current || $("room-create-name")).focus();
  });
  const input = $("message-input");
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) sendMessage(event);
    if (event.key === "Escape") clearError();
  });
  input.addEventListener("input", () => {
    updateCounter();
    noteTyping();
  });
  $("scroller").addEventListener("scroll", () => {
    if ($("scroller").scrollTop < 80) loadOlder();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      pollRooms();
      markRead(state.room);
    }
  });
}

/** A token handed over in the address signs in with it. */
function signInFromFragment() {
  const token = takeTokenFromFragment();
  if (!token) return false;
  if (state.mode === "open") applyMode("unknown");
  $("token").value = token;
  $("login-form").requestSubmit();
  return true;
}

async function main() {
  wire();
  try {
    $("nickname").value = localStorage.getItem("chat-service.nickname") || "";
  } catch {
    // No storage: start empty.
  }
  // Signing in waits for the answer: a sign-in before it would be undone by showLogin below,
  // and would not know whether to send a token.
  applyMode(await detectMode());
  $("login-submit").disabled = false;
  // The same page opened again with a new #token= does not reload: listen for it.
  window.addEventListener("hashchange", signInFromFragment);
  if (!signInFromFragment()) showLogin();
}

main();
