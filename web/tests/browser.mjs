// The chat page in a real browser (Playwright driving Debian's Chromium) against a running
// chat-server in open mode:
//   node web/tests/browser.mjs http://127.0.0.1:8080 [--screenshots docs]
// alice and bob, in two browser contexts, sign in, meet in one room and exchange a message
// that each sees once, in seq order; a 5,000-character message shows the server's error
// next to the input and nothing is stored; alice's dropped connection resumes without a
// gap or a duplicate; scrolling up a room of 500 messages reaches seq 1. With --screenshots
// it saves alice's page (bob back in the room and typing) at 1280 and 375 px wide into that
// folder. Stops at the first failure
// (exit 1); prints "browser: N passed, N failed" at the end. crates/server/tests/browser.rs
// runs it against a server of its own.
import assert from "node:assert/strict";
import path from "node:path";
import { WAIT, relay, serverUrl, shown, signIn, startBrowser, tid } from "./harness.mjs";

const base = serverUrl("node web/tests/browser.mjs <server URL, e.g. http://127.0.0.1:8080> [--screenshots DIR]");
const shotsFlag = process.argv.indexOf("--screenshots");
const shots = shotsFlag > 0 ? path.resolve(process.argv[shotsFlag + 1]) : null;
const { check, person, problems, onFinish, finish } = await startBrowser("browser");

async function historyOf(room) {
  const response = await fetch(`${base}/api/chatrooms/${room}/messages?limit=200`);
  assert.equal(response.status, 200);
  return response.json();
}

// alice's page goes through the relay, so that her connection can be dropped.
const aliceLine = await relay(base);
onFinish(() => aliceLine.close());
const alice = await person("alice", aliceLine.url);
const bob = await person("bob", base);
const roomName = `browser ${Date.now().toString(36)}`;
let room;

await check("the page says open mode is not secure, and every input has a label", async () => {
  await alice.page.goto(alice.base);
  await alice.page.locator("#login-open-warning", { hasText: "Open mode: not secure." }).waitFor({ timeout: WAIT });
  assert.equal(await alice.page.locator(tid("token-input")).isVisible(), false, "no token field in open mode");
  for (const id of ["nickname-input"]) {
    const label = await alice.page.locator(tid(id)).evaluate((input) => input.labels[0]?.textContent.trim());
    assert.ok(label, `${id} has a label`);
  }
});

await check("signing in waits until the page knows how the server signs people in", async () => {
  // The page first asks the server whether it wants a token. A sign-in before that answer
  // used to show the rooms and then be hidden again by the sign-in form (on a busy machine).
  const early = await person("early", base);
  let answer;
  const asked = new Promise((resolve) => (answer = resolve));
  await early.page.route(
    (url) => url.pathname === "/api/chatrooms" && url.search === "?limit=1",
    async (route) => {
      await asked;
      await route.continue();
    },
  );
  await early.page.goto(early.base);
  await early.page.getByLabel("Nickname").fill("early");
  await early.page.getByLabel("Nickname").press("Enter");
  assert.equal(await early.page.locator(tid("login-submit")).isDisabled(), true, "no sign-in before the answer");
  assert.equal(await early.page.locator("#chat").isVisible(), false);
  answer();
  await signIn(early);
  await early.page.locator("aside.rooms").waitFor({ timeout: WAIT });
  assert.equal(await early.page.locator("#login").isVisible(), false, "the sign-in form is gone");
  await early.context.close();
});

await check("alice signs in with a nickname and creates a room", async () => {
  await signIn(alice);
  const status = await alice.page.locator(tid("connection-status")).textContent();
  assert.match(status, /Connected · instance \S+/);
  for (const id of ["room-create-name", "message-input"]) {
    const label = await alice.page.locator(tid(id)).evaluate((input) => input.labels[0]?.textContent.trim());
    assert.ok(label, `${id} has a label`);
  }
  await alice.page.locator(tid("room-create-name")).fill(roomName);
  await alice.page.locator(tid("room-create-submit")).click();
  const button = alice.page.locator(`${tid("room-list")} [data-room-id]`, { hasText: roomName });
  await button.waitFor({ timeout: WAIT });
  room = Number(await button.getAttribute("data-room-id"));
  assert.ok(room > 0);
  await alice.page.locator(`#room-title:has-text("${roomName}")`).waitFor({ timeout: WAIT });
});

await check("bob signs in and joins the same room from the list", async () => {
  await signIn(bob);
  await bob.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
  await bob.page.locator(`#room-title:has-text("${roomName}")`).waitFor({ timeout: WAIT });
  // Joined: the input takes the focus once the history is loaded and the room followed.
  await bob.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
    timeout: WAIT,
  });
});

await check("each sees the other's message once, in seq order, sent with Enter", async () => {
  await alice.page.locator(tid("message-input")).fill("hello from alice");
  await alice.page.locator(tid("message-input")).press("Enter");
  await bob.page.locator(`${tid("message-list")} [data-seq]`, { hasText: "hello from alice" }).waitFor({ timeout: WAIT });
  await bob.page.locator(tid("message-input")).fill("hi from bob");
  await bob.page.locator(tid("message-send")).click();
  for (const who of [alice, bob]) {
    await who.page.locator(`${tid("message-list")} [data-seq]`, { hasText: "hi from bob" }).waitFor({ timeout: WAIT });
  }
  // Late duplicates would show up here.
  await alice.page.waitForTimeout(500);
  const expected = [
    { seq: 1, text: "hello from alice" },
    { seq: 2, text: "hi from bob" },
  ];
  for (const who of [alice, bob]) {
    assert.deepEqual(await shown(who.page), expected, `${who.name}'s page`);
    assert.equal(await who.page.locator("#pending-list li").count(), 0, `${who.name}: nothing left sending`);
  }
  assert.deepEqual(
    (await historyOf(room)).map((m) => [m.seq, m.senderNickname, m.content]),
    [
      [1, "alice", "hello from alice"],
      [2, "bob", "hi from bob"],
    ],
  );
  // Every message SEND carried a receipt and an idempotency key (typing SENDs aside).
  const sends = alice.frames.filter(
    (frame) => frame.startsWith("SEND\n") && frame.includes("\ndestination:/app/chat.sendMessage\n"),
  );
  assert.equal(sends.length, 1);
  assert.match(sends[0], /\nreceipt:send-\d+\n/);
  assert.match(sends[0], /\nx-idempotency-key:[0-9a-f-]{36}\n/);
});

await check("a 5,000-character message shows the server's error by the input and is not stored", async () => {
  const input = alice.page.locator(tid("message-input"));
  await input.fill("x".repeat(5000));
  await alice.page.locator("#counter.over").waitFor({ timeout: WAIT });
  await input.press("Enter");
  const banner = alice.page.locator(tid("error-banner"));
  await banner.waitFor({ state: "visible", timeout: WAIT });
  assert.match(await banner.textContent(), /at most 4000 characters/);
  assert.equal(await banner.getAttribute("data-code"), "CONTENT_TOO_LONG");
  // The text is given back to be shortened.
  assert.equal((await input.inputValue()).length, 5000);
  await alice.page.waitForTimeout(500);
  for (const who of [alice, bob]) {
    assert.equal((await shown(who.page)).length, 2, `${who.name} shows no new message`);
  }
  assert.equal((await historyOf(room)).length, 2, "nothing stored");
  await input.fill("");
});

await check("a dropped connection resumes: what was missed shows once, what was typed offline is sent once", async () => {
  const status = (state) => `${tid("connection-status")}[data-state="${state}"]`;
  aliceLine.cut();
  await alice.page.locator(status("reconnecting")).waitFor({ timeout: WAIT });
  for (const text of ["missed 1", "missed 2", "missed 3"]) {
    await bob.page.locator(tid("message-input")).fill(text);
    await bob.page.locator(tid("message-input")).press("Enter");
    await bob.page.locator(`${tid("message-list")} [data-seq]`, { hasText: text }).waitFor({ timeout: WAIT });
  }
  await alice.page.locator(tid("message-input")).fill("typed while offline");
  await alice.page.locator(tid("message-input")).press("Enter");
  await alice.page.locator("#pending-list li", { hasText: "typed while offline" }).waitFor({ timeout: WAIT });
  aliceLine.restore();
  await alice.page.locator(status("resumed")).waitFor({ timeout: WAIT });
  for (const who of [alice, bob]) {
    await who.page.locator(`${tid("message-list")} [data-seq]`, { hasText: "typed while offline" }).waitFor({ timeout: WAIT });
  }
  await alice.page.waitForTimeout(500);
  const texts = ["hello from alice", "hi from bob", "missed 1", "missed 2", "missed 3", "typed while offline"];
  const expected = texts.map((text, i) => ({ seq: i + 1, text }));
  for (const who of [alice, bob]) {
    assert.deepEqual(await shown(who.page), expected, `${who.name}'s page`);
  }
  assert.deepEqual((await historyOf(room)).map((m) => m.content), texts);
  const resume = alice.frames.filter(
    (frame) => frame.startsWith("SUBSCRIBE\n") && /\ndestination:\/topic\/chatroom\/\d+\n/.test(frame),
  );
  assert.match(resume[resume.length - 1], /\nx-resume-after:2\n/);
});

await check("scrolling up through a room of 500 messages loads every page back to seq 1", async () => {
  const created = await fetch(`${base}/api/chatrooms`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `${roomName} long` }),
  });
  assert.equal(created.status, 201);
  const long = (await created.json()).id;
  for (let i = 1; i <= 500; i += 1) {
    const sent = await fetch(`${base}/api/chatrooms/${long}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ chatRoomId: long, senderId: 99, senderNickname: "carol", content: `line ${i}` }),
    });
    assert.equal(sent.status, 201);
  }
  const { page } = bob;
  await page.reload();
  await page.getByLabel("Nickname").fill("bob");
  await page.locator(tid("login-submit")).click();
  await page.locator(`${tid("room-list")} [data-room-id="${long}"]`).click();
  await page.locator(`${tid("message-list")} [data-seq="500"]`).waitFor({ timeout: WAIT });
  assert.equal(await page.locator(`${tid("message-list")} [data-seq]`).count(), 50, "the newest page first");
  const edge = page.locator("#history-edge");
  for (let round = 0; round < 20 && !(await edge.isVisible()); round += 1) {
    const before = await page.locator(`${tid("message-list")} [data-seq]`).count();
    await page.locator("#scroller").evaluate((scroller) => {
      scroller.scrollTop = 0;
    });
    await page.waitForFunction(
      ([selector, count]) => document.querySelectorAll(selector).length > count || !document.getElementById("history-edge").hidden,
      [`${tid("message-list")} [data-seq]`, before],
      { timeout: WAIT },
    );
  }
  const seqs = (await shown(page)).map((m) => m.seq);
  assert.deepEqual(seqs, Array.from({ length: 500 }, (_, i) => i + 1));
  assert.equal(await edge.textContent(), "The beginning of this room.");
});

if (shots) {
  await check(`screenshots at 1280 and 375 px wide in ${shots}`, async () => {
    const { page } = alice;
    // bob is back in the room and typing: the pictures show the member list and the indicator.
    await bob.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
    await page.locator(`${tid("presence-member")}:has-text("bob")`).waitFor({ timeout: WAIT });
    await bob.page.locator(tid("message-input")).fill("typing…");
    await page.locator(`${tid("typing-indicator")}:has-text("bob is typing…")`).waitFor({ timeout: WAIT });
    await page.locator(tid("message-input")).press("Escape");
    await page.locator(tid("message-input")).fill("Enter sends; Shift+Enter starts a new line");
    await page.screenshot({ path: path.join(shots, "screenshot-1280.png") });
    await page.setViewportSize({ width: 375, height: 740 });
    await page.waitForTimeout(200);
    await page.screenshot({ path: path.join(shots, "screenshot-375.png") });
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 375, `no sideways scrolling at 375 px (content is ${width} px wide)`);
    await page.setViewportSize({ width: 1280, height: 800 });
  });
}

await check("no page errors and no console errors (CSP violations included)", async () => {
  assert.deepEqual(problems(), []);
});

await finish();
