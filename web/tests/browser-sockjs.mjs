// The chat page in a browser without WebSocket (removed before the page loads, as an old
// browser or a proxy that blocks upgrades would leave it): it must fall back to SockJS's
// HTTP transports on /ws and chat as usual.
//   node web/tests/browser-sockjs.mjs http://127.0.0.1:8080
// crates/server/tests/browser.rs runs it against a server of its own.
import assert from "node:assert/strict";
import { WAIT, serverUrl, shown, signIn, startBrowser, tid } from "./harness.mjs";

const base = serverUrl("node web/tests/browser-sockjs.mjs <server URL>");
const { check, person, problems, finish } = await startBrowser("browser-sockjs");

async function withoutWebSocket(name) {
  const who = await person(name, base);
  await who.page.addInitScript(() => {
    delete window.WebSocket;
  });
  who.sockjsRequests = [];
  who.page.on("request", (request) => {
    if (/\/ws\/[^/]+\/[^/]+\/xhr/.test(request.url())) who.sockjsRequests.push(request.url());
  });
  who.websockets = 0;
  who.page.on("websocket", () => who.websockets++);
  await signIn(who);
  return who;
}

const created = await fetch(`${base}/api/chatrooms`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ name: `sockjs ${Date.now().toString(36)}` }),
});
assert.equal(created.status, 201);
const room = (await created.json()).id;
let alice;
let bob;

await check("with WebSocket removed, the page connects over SockJS's HTTP transports", async () => {
  alice = await withoutWebSocket("alice");
  bob = await withoutWebSocket("bob");
  for (const who of [alice, bob]) {
    assert.equal(who.websockets, 0, `${who.name} opened no WebSocket`);
    assert.ok(who.sockjsRequests.length > 0, `${who.name} used an xhr transport`);
  }
});

await check("alice and bob each see the other's message once, in seq order", async () => {
  for (const who of [alice, bob]) {
    await who.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
    await who.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
      timeout: WAIT,
    });
  }
  await alice.page.locator(tid("message-input")).fill("over sockjs from alice");
  await alice.page.locator(tid("message-input")).press("Enter");
  await bob.page.locator(`${tid("message-list")} [data-seq="1"]`).waitFor({ timeout: WAIT });
  await bob.page.locator(tid("message-input")).fill("over sockjs from bob");
  await bob.page.locator(tid("message-input")).press("Enter");
  for (const who of [alice, bob]) {
    await who.page.locator(`${tid("message-list")} [data-seq="2"]`).waitFor({ timeout: WAIT });
    assert.deepEqual(
      (await shown(who.page)).map((m) => [m.seq, m.text]),
      [
        [1, "over sockjs from alice"],
        [2, "over sockjs from bob"],
      ],
      `${who.name} sees each message once`,
    );
  }
  assert.deepEqual(problems(), []);
});

await finish();
