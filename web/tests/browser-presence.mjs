// Presence and typing on the chat page, in a real browser, against a running chat-server in
// open mode:
//   node web/tests/browser-presence.mjs http://127.0.0.1:8080
// alice, bob and carol open one room: each page lists the others (CONNECT carries `login`
// and `x-nickname`); bob types a sentence and alice sees "bob is typing…" while bob's page
// sent at most one typing SEND every 2 s, and the indicator goes a few seconds after he
// stops; at 375 px the list is one line; bob closes his page and alice's list drops him;
// carol leaves while alice's connection is down and the fresh snapshot after the reconnect
// no longer has her; switching rooms ends the old room's presence and typing subscriptions.
// Stops at the first failure (exit 1); prints "browser-presence: N passed, N failed".
// crates/server/tests/browser.rs runs it against a server of its own.
import assert from "node:assert/strict";
import { WAIT, relay, serverUrl, signIn, startBrowser, tid } from "./harness.mjs";

const base = serverUrl("node web/tests/browser-presence.mjs <server URL>");
const { check, person, problems, onFinish, finish } = await startBrowser("browser-presence");

/** The nicknames a page lists as present, in page order. */
async function present(page) {
  return page.locator(`${tid("presence-list")} ${tid("presence-member")}`).evaluateAll((items) =>
    items.map((item) => item.textContent),
  );
}

async function waitForPresent(who, expected) {
  await who.page
    .waitForFunction(
      ([selector, names]) => {
        const shown = [...document.querySelectorAll(selector)].map((item) => item.textContent);
        return shown.length === names.length && names.every((name) => shown.includes(name));
      },
      [`${tid("presence-list")} ${tid("presence-member")}`, expected],
      { timeout: WAIT },
    )
    .catch(async (error) => {
      throw new Error(`${who.name} lists ${JSON.stringify(await present(who.page))}, not ${JSON.stringify(expected)}: ${error.message}`);
    });
}

/** Signs in and opens `room` from the list; resolves once the room is followed. */
async function enter(who, room) {
  await signIn(who);
  await who.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
  await who.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
    timeout: WAIT,
  });
}

const created = await fetch(`${base}/api/chatrooms`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ name: `presence ${Date.now().toString(36)}` }),
});
assert.equal(created.status, 201);
const room = (await created.json()).id;
const other = await fetch(`${base}/api/chatrooms`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ name: `presence elsewhere ${Date.now().toString(36)}` }),
});
assert.equal(other.status, 201);
const otherRoom = (await other.json()).id;

// alice's page goes through a relay, so that her connection can be dropped.
const aliceLine = await relay(base);
onFinish(() => aliceLine.close());
const alice = await person("alice", aliceLine.url);
const bob = await person("bob", base);
const carol = await person("carol", base);
// When each frame bob's page sent went out, for the typing throttle.
const bobSent = [];
bob.page.on("websocket", (socket) => {
  socket.on("framesent", (frame) => bobSent.push({ at: Date.now(), frame: String(frame.payload) }));
});

await check("alice, bob and carol open one room and each lists the others", async () => {
  await enter(alice, room);
  await enter(bob, room);
  await enter(carol, room);
  await waitForPresent(alice, ["bob", "carol", "alice (you)"]);
  await waitForPresent(bob, ["alice", "carol", "bob (you)"]);
  await waitForPresent(carol, ["alice", "bob", "carol (you)"]);
  assert.equal(await alice.page.locator("#presence-count").textContent(), "3 here:");
  // Open mode: the page says who it is in CONNECT, as the id it sends messages as.
  const connect = alice.frames.find((frame) => /^(CONNECT|STOMP)\n/.test(frame));
  assert.match(connect, /\nlogin:\d+\n/);
  assert.match(connect, /\nx-nickname:alice\n/);
  const subscribes = alice.frames.filter((frame) => frame.startsWith("SUBSCRIBE\n"));
  for (const topic of [`/topic/chatroom/${room}/presence`, `/topic/chatroom/${room}/typing`]) {
    assert.ok(subscribes.some((frame) => frame.includes(`\ndestination:${topic}\n`)), `alice subscribed to ${topic}`);
  }
});

await check("bob types: alice sees 'bob is typing…', bob's page sends at most one typing SEND per 2 s", async () => {
  const indicator = alice.page.locator(tid("typing-indicator"));
  assert.equal(await indicator.isVisible(), false, "nobody is typing yet");
  const started = Date.now();
  const text = "a sentence typed one key at a time";
  await bob.page.locator(tid("message-input")).pressSequentially(text, { delay: 110 });
  const elapsed = Date.now() - started;
  await alice.page.locator(`${tid("typing-indicator")}:has-text("bob is typing…")`).waitFor({ timeout: WAIT });
  const typing = bobSent.filter(({ frame }) => frame.startsWith("SEND\n") && frame.includes("\ndestination:/app/chat.typing\n"));
  assert.ok(typing.length >= 1, "bob's page said he is typing");
  assert.ok(typing.length <= Math.floor(elapsed / 2000) + 1, `${typing.length} typing SENDs in ${elapsed} ms of typing`);
  assert.ok(typing.length < text.length / 4, "not one per keystroke");
  for (let i = 1; i < typing.length; i += 1) {
    assert.ok(typing[i].at - typing[i - 1].at >= 1900, `typing SENDs ${typing[i].at - typing[i - 1].at} ms apart`);
  }
  assert.match(typing[0].frame, new RegExp(`\\n\\n\\{"chatRoomId":${room}\\}\\0?$`));
  // One's own typing is not shown.
  await bob.page.waitForTimeout(300);
  assert.equal(await bob.page.locator(tid("typing-indicator")).isVisible(), false, "bob does not see himself typing");
  // No typing event for a while: the indicator goes (about 3 s after the last one).
  await alice.page.locator(tid("typing-indicator")).waitFor({ state: "hidden", timeout: WAIT });
  await bob.page.locator(tid("message-input")).fill("");
});

await check("at 375 px the member list is one compact line and nothing scrolls sideways", async () => {
  const { page } = alice;
  await page.setViewportSize({ width: 375, height: 740 });
  await page.waitForTimeout(200);
  const box = page.locator("#presence");
  assert.ok(await box.isVisible(), "the list shows");
  const { height, lineHeight } = await box.evaluate((node) => ({
    height: node.clientHeight,
    lineHeight: parseFloat(getComputedStyle(node).lineHeight) || 20,
  }));
  assert.ok(height < lineHeight * 2 + 12, `one line (${height} px for a line of ${lineHeight} px)`);
  assert.equal(await page.locator("#presence-count").textContent(), "3 here:");
  assert.deepEqual(await present(page), ["bob", "carol", "alice (you)"], "the others by name, then oneself");
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `no sideways scrolling at 375 px (content is ${width} px wide)`);
  assert.ok(await page.locator(tid("message-input")).isVisible(), "the input is still there");
  await page.setViewportSize({ width: 1280, height: 800 });
});

await check("bob closes his page: alice's and carol's lists drop him", async () => {
  await bob.page.close();
  await waitForPresent(alice, ["carol", "alice (you)"]);
  await waitForPresent(carol, ["alice", "carol (you)"]);
  assert.equal(await alice.page.locator("#presence-count").textContent(), "2 here:");
});

await check("after a reconnect a fresh snapshot replaces the list (carol left meanwhile)", async () => {
  const status = (state) => `${tid("connection-status")}[data-state="${state}"]`;
  aliceLine.cut();
  await alice.page.locator(status("reconnecting")).waitFor({ timeout: WAIT });
  await carol.page.close();
  aliceLine.restore();
  await alice.page.locator(status("resumed")).waitFor({ timeout: WAIT });
  await waitForPresent(alice, ["alice (you)"]);
  const presence = alice.frames.filter(
    (frame) => frame.startsWith("SUBSCRIBE\n") && frame.includes(`\ndestination:/topic/chatroom/${room}/presence\n`),
  );
  assert.equal(presence.length, 2, "subscribed again after the reconnect");
});

await check("switching rooms ends the old room's presence and typing subscriptions", async () => {
  const before = alice.frames.length;
  await alice.page.locator(`${tid("room-list")} [data-room-id="${otherRoom}"]`).click();
  await alice.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
    timeout: WAIT,
  });
  await waitForPresent(alice, ["alice (you)"]);
  const after = alice.frames.slice(before);
  const ids = (kind) =>
    alice.frames
      .filter((frame) => frame.startsWith("SUBSCRIBE\n") && frame.includes(`\ndestination:/topic/chatroom/${room}${kind}\n`))
      .map((frame) => frame.match(/\nid:([^\n]+)\n/)[1]);
  for (const kind of ["", "/presence", "/typing"]) {
    const id = ids(kind).pop();
    assert.ok(
      after.some((frame) => frame.startsWith("UNSUBSCRIBE\n") && frame.includes(`\nid:${id}\n`)),
      `UNSUBSCRIBE of ${room}${kind} (${id})`,
    );
  }
  const subscribes = after.filter((frame) => frame.startsWith("SUBSCRIBE\n")).map((frame) => frame.match(/\ndestination:([^\n]+)\n/)[1]);
  assert.deepEqual(subscribes.sort(), [
    `/topic/chatroom/${otherRoom}`,
    `/topic/chatroom/${otherRoom}/presence`,
    `/topic/chatroom/${otherRoom}/typing`,
  ]);
});

await check("no page errors and no console errors (CSP violations included)", async () => {
  assert.deepEqual(problems(), []);
});

await finish();
