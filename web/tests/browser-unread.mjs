// Unread badges on the chat page, synced across one user's pages, in a real browser,
// against a running chat-server in open mode:
//   node web/tests/browser-unread.mjs http://127.0.0.1:8080
// alice has two pages (one browser context: the same nickname and the same stored sender
// id, so one user to the server), both with room O open; bob sends 3 messages in room R:
// both of alice's pages show the badge 3 for R (rooms not open: their lastSeq, polled). Page 1 opens R and reads them (one
// /app/chat.read with seq 3): page 2's badge goes, through /user/queue/read. While page 1
// has R open, bob's next messages are read as they arrive, at most one read SEND a second,
// seqs rising. A page opened later gets its badges from GET /api/me/rooms.
// Stops at the first failure (exit 1); prints "browser-unread: N passed, N failed".
// crates/server/tests/browser.rs runs it against a server of its own.
import assert from "node:assert/strict";
import { WAIT, serverUrl, signIn, startBrowser, tid } from "./harness.mjs";

const base = serverUrl("node web/tests/browser-unread.mjs <server URL>");
const { check, person, problems, finish } = await startBrowser("browser-unread");

async function createRoom(name) {
  const response = await fetch(`${base}/api/chatrooms`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `${name} ${Date.now().toString(36)}` }),
  });
  assert.equal(response.status, 201);
  return (await response.json()).id;
}

const R = await createRoom("unread");
const O = await createRoom("elsewhere");

/** Opens `room` from the list; resolves once its composer has the focus. */
async function open(who, room) {
  await who.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
  await who.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
    timeout: WAIT,
  });
}

const badge = (who, room) => who.page.locator(`${tid("room-list")} [data-room-id="${room}"] ${tid("unread-badge")}`);

async function waitForBadge(who, room, text, timeout = WAIT) {
  const selector = `${tid("room-list")} [data-room-id="${room}"] ${tid("unread-badge")}`;
  await who.page
    .waitForFunction(
      ([selector, text]) => {
        const node = document.querySelector(selector);
        if (!node) return false;
        return text === null ? node.hidden : !node.hidden && node.textContent === text;
      },
      [selector, text],
      { timeout },
    )
    .catch(async (error) => {
      const node = badge(who, room);
      const shown = (await node.count()) ? `${await node.isVisible()} "${await node.textContent()}"` : "none";
      throw new Error(`${who.label || who.name}: badge of room ${room} is ${shown}, not ${text === null ? "hidden" : text}: ${error.message}`);
    });
}

/** Every frame a page sends, with when it went out. */
function recordFrames(page) {
  const sent = [];
  page.on("websocket", (socket) => {
    socket.on("framesent", (frame) => sent.push({ at: Date.now(), frame: String(frame.payload) }));
  });
  return sent;
}

/** The /app/chat.read SENDs among `sent`, as { at, chatRoomId, seq }. */
function reads(sent) {
  return sent
    .filter(({ frame }) => frame.startsWith("SEND\n") && frame.includes("\ndestination:/app/chat.read\n"))
    .map(({ at, frame }) => ({ at, ...JSON.parse(frame.slice(frame.indexOf("\n\n") + 2).replace(/\0$/, "")) }));
}

/** A second page of `who`, in the same browser context (same localStorage: the same user). */
async function anotherPage(who, label) {
  const page = await who.context.newPage();
  // signIn types `name` as the nickname: the same as the first page.
  const extra = { name: who.name, label, base: who.base, context: who.context, page, problems: who.problems };
  page.on("pageerror", (error) => who.problems.push(`${label}: page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !/status of 401/.test(message.text())) {
      who.problems.push(`${label}: console error: ${message.text()}`);
    }
  });
  extra.sent = recordFrames(page);
  return extra;
}

const alice = await person("alice", base);
alice.sent = recordFrames(alice.page);
const alice2 = await anotherPage(alice, "alice (page 2)");
const bob = await person("bob", base);

function connectLogin(sent) {
  const connect = sent.find(({ frame }) => /^(CONNECT|STOMP)\n/.test(frame));
  return connect && connect.frame.match(/\nlogin:(\d+)\n/)?.[1];
}

async function say(who, text) {
  const input = who.page.locator(tid("message-input"));
  await input.fill(text);
  await input.press("Enter");
  await who.page.locator(`${tid("message-list")} [data-seq]`, { hasText: text }).waitFor({ timeout: WAIT });
}

await check("alice's two pages are one user, both in room O; bob is in room R", async () => {
  await signIn(alice);
  await signIn(alice2);
  const one = connectLogin(alice.sent);
  assert.ok(one, "page 1 sent CONNECT with a login");
  assert.equal(connectLogin(alice2.sent), one, "both pages connect as the same user");
  await open(alice, O);
  await open(alice2, O);
  await signIn(bob);
  await open(bob, R);
  for (const who of [alice, alice2]) await waitForBadge(who, R, null);
});

await check("bob sends 3 messages in R: both of alice's pages show the badge 3 for R, none for O", async () => {
  for (const text of ["one", "two", "three"]) await say(bob, text);
  await waitForBadge(alice2, R, "3");
  await waitForBadge(alice, R, "3");
  assert.equal(await badge(alice2, O).isVisible(), false, "the open room O has no badge");
});

await check("alice reads R on page 1 (one /app/chat.read, seq 3): page 2's badge for R goes", async () => {
  const before = reads(alice.sent).length;
  await open(alice, R);
  await waitForBadge(alice2, R, null);
  await waitForBadge(alice, R, null);
  const sent = reads(alice.sent).slice(before);
  assert.deepEqual(
    sent.map(({ chatRoomId, seq }) => [chatRoomId, seq]),
    [[R, 3]],
    "page 1 moved the cursor once, to the newest message shown",
  );
  assert.equal(reads(alice2.sent).filter((read) => read.chatRoomId === R).length, 0, "page 2 read nothing in R");
});

await check("messages arriving in the open room are read as they come: at most one read SEND a second, seqs rising", async () => {
  const before = reads(alice.sent).length;
  for (const text of ["four", "five", "six", "seven"]) await say(bob, text);
  await alice.page.locator(`${tid("message-list")} [data-seq="7"]`).waitFor({ timeout: WAIT });
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline && reads(alice.sent).slice(before).at(-1)?.seq !== 7) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const sent = reads(alice.sent)
    .slice(before)
    .filter((read) => read.chatRoomId === R);
  assert.equal(sent.at(-1)?.seq, 7, `the last read SEND is seq 7: ${JSON.stringify(sent)}`);
  for (let i = 1; i < sent.length; i += 1) {
    assert.ok(sent[i].seq > sent[i - 1].seq, `seqs rise: ${JSON.stringify(sent)}`);
    assert.ok(sent[i].at - sent[i - 1].at >= 950, `at most one a second: ${JSON.stringify(sent)}`);
  }
  assert.ok(sent[0].seq > 3, "never a seq already sent");
  await waitForBadge(alice2, R, null);
});

await check("a page opened later gets its badges from GET /api/me/rooms", async () => {
  await open(alice, O);
  await say(bob, "eight");
  await say(bob, "nine");
  const alice3 = await anotherPage(alice, "alice (page 3)");
  const asked = [];
  alice3.page.on("request", (request) => {
    if (request.url().includes("/api/me/rooms")) asked.push(request.url());
  });
  await signIn(alice3);
  await waitForBadge(alice3, R, "2");
  assert.ok(asked.length >= 1, "asked GET /api/me/rooms");
  assert.match(asked[0], new RegExp(`[?&]userId=${connectLogin(alice.sent)}(&|$)`), "with the page's sender id");
  await waitForBadge(alice2, R, "2");
  await open(alice3, R);
  for (const who of [alice, alice2, alice3]) await waitForBadge(who, R, null);
});

await check("no page errors and no console errors (CSP violations included)", async () => {
  assert.deepEqual(problems(), []);
});

await finish();
