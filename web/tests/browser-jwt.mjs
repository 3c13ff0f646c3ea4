// The chat page in a real browser against a chat-server in jwt mode:
//   node web/tests/browser-jwt.mjs http://127.0.0.1:8080 <a token for user 7 named alice>
// The page asks for a token (and does not call itself open); a token the server refuses
// brings the server's reason back to the sign-in form; a token in the address (#token=)
// signs in at once and leaves the address; messages go out without a senderId and are
// stored as the token's user. Prints "browser-jwt: N passed, N failed" at the end.
// crates/server/tests/browser.rs runs it.
import assert from "node:assert/strict";
import { WAIT, serverUrl, shown, startBrowser, tid } from "./harness.mjs";

const base = serverUrl("node web/tests/browser-jwt.mjs <server URL> <token>");
const token = process.argv[3];
assert.ok(token, "give a token (sub 7, name alice) as the second argument");
const { check, person, problems, finish } = await startBrowser("browser-jwt");
const alice = await person("alice", base);
const { page } = alice;

await check("in jwt mode the page asks for a token and does not warn about open mode", async () => {
  await page.goto(base);
  await page.locator(tid("token-input")).waitFor({ timeout: WAIT });
  assert.equal(await page.locator("#login-open-warning").isVisible(), false);
  const label = await page.locator(tid("token-input")).evaluate((input) => input.labels[0]?.textContent.trim());
  assert.match(label, /token/i);
});

await check("a token the server refuses brings its reason back to the sign-in form", async () => {
  const [header, claims] = token.split(".");
  await page.locator(tid("token-input")).fill(`${header}.${claims}.bm90LXRoZS1zaWduYXR1cmU`);
  await page.locator(tid("login-submit")).click();
  const error = page.locator("#login-error");
  await error.waitFor({ state: "visible", timeout: WAIT });
  assert.match(await error.textContent(), /refused/);
  assert.equal(await page.locator(tid("connection-status")).getAttribute("data-state"), "stopped");
});

await check("a token in the address signs in at once and is taken out of the address", async () => {
  await page.goto(`${base}/#token=${token}`);
  await page.locator(`${tid("connection-status")}[data-state="connected"]`).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => location.hash), "");
  assert.match(await page.locator("#who-name").textContent(), /alice/);
});

await check("a message is stored as the token's user, sent without a senderId", async () => {
  await page.locator(tid("room-create-name")).fill("with a token");
  await page.locator(tid("room-create-submit")).click();
  await page.locator(`${tid("room-list")} [data-room-id]`, { hasText: "with a token" }).waitFor({ timeout: WAIT });
  const room = Number(await page.locator('[data-room-id][aria-current="true"]').getAttribute("data-room-id"));
  await page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, { timeout: WAIT });
  await page.locator(tid("message-input")).fill("hello with a token");
  await page.locator(tid("message-input")).press("Enter");
  await page.locator(`${tid("message-list")} [data-seq="1"]`).waitFor({ timeout: WAIT });
  assert.deepEqual(await shown(page), [{ seq: 1, text: "hello with a token" }]);
  const history = await fetch(`${base}/api/chatrooms/${room}/messages`, {
    headers: { authorization: `Bearer ${token}` },
  }).then((response) => response.json());
  assert.deepEqual(
    history.map((m) => [m.seq, m.senderId, m.senderNickname, m.content]),
    [[1, 7, "alice", "hello with a token"]],
  );
  const send = alice.frames.find(
    (frame) => frame.startsWith("SEND\n") && frame.includes("\ndestination:/app/chat.sendMessage\n"),
  );
  assert.ok(send && !send.includes("senderId"), `the SEND names no sender: ${send}`);
});

await check("no page errors and no console errors", async () => {
  // The refused sign-in's socket close is not a page error.
  assert.deepEqual(problems(), []);
});

await finish();
