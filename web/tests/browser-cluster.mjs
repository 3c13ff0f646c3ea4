// The chat page on two real chat-server instances (one PostgreSQL, one Redis) behind nginx,
// in a real browser, while bob's instance goes away:
//   node web/tests/browser-cluster.mjs <balancer URL> <port>=<pid> <port>=<pid> TERM|KILL
// bob opens the page through the balancer; alice opens it directly on the other instance.
// They chat once, then alice sends 50 messages and, after the 10th, bob's instance gets
// SIGTERM (a drain) or SIGKILL (a crash). bob's page must reconnect through the balancer to
// the instance that is left and show all 50, each once, with consecutive seqs.
// crates/server/tests/browser.rs runs it against a cluster of its own.
import assert from "node:assert/strict";
import { WAIT, shown, signIn, startBrowser, tid } from "./harness.mjs";

const usage = "node web/tests/browser-cluster.mjs <balancer URL> <port>=<pid> <port>=<pid> TERM|KILL";
const [balancerArg, firstArg, secondArg, signal] = process.argv.slice(2);
if (!balancerArg || !firstArg || !secondArg || !["TERM", "KILL"].includes(signal)) {
  console.error(`usage: ${usage}`);
  process.exit(2);
}
const balancer = balancerArg.replace(/\/$/, "");
const instances = [firstArg, secondArg].map((arg) => {
  const [port, pid] = arg.split("=").map(Number);
  return { port, pid, url: `http://127.0.0.1:${port}` };
});
const BURST = 50;
const { check, person, problems, finish } = await startBrowser(`browser-cluster (SIG${signal})`);

/** The port of the instance a page says it is connected to (the id ends in `-<port>`). */
async function instancePort(page) {
  const id = await page.locator(tid("connection-status")).getAttribute("data-instance");
  const port = Number(id?.split("-").pop());
  assert.ok(port > 0, `the page names its instance (data-instance=${id})`);
  return port;
}

async function join(who, room) {
  await who.page.locator(`${tid("room-list")} [data-room-id="${room}"]`).click();
  await who.page.waitForFunction(() => document.activeElement?.dataset.testid === "message-input", null, {
    timeout: WAIT,
  });
}

async function say(who, text) {
  await who.page.locator(tid("message-input")).fill(text);
  await who.page.locator(tid("message-input")).press("Enter");
}

const bob = await person("bob", balancer);
let doomed;
let survivor;
let alice;
let room;

await check("bob opens the page through the balancer; alice opens it on the other instance", async () => {
  const created = await fetch(`${balancer}/api/chatrooms`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `cluster ${Date.now().toString(36)}` }),
  });
  assert.equal(created.status, 201);
  room = (await created.json()).id;
  await signIn(bob);
  const port = await instancePort(bob.page);
  doomed = instances.find((i) => i.port === port);
  survivor = instances.find((i) => i.port !== port);
  assert.ok(doomed && survivor, `bob is on one of the two instances (port ${port})`);
  alice = await person("alice", survivor.url);
  await signIn(alice);
  assert.equal(await instancePort(alice.page), survivor.port);
});

await check("they meet in a room and each sees the other's message once", async () => {
  await join(alice, room);
  await join(bob, room);
  await say(alice, "hello bob");
  await say(bob, "hello alice");
  for (const who of [alice, bob]) {
    await who.page.waitForFunction(
      () => document.querySelectorAll('[data-testid="message-list"] [data-seq]').length >= 2,
      null,
      { timeout: WAIT },
    );
    const seen = await shown(who.page);
    assert.deepEqual(
      seen.map((m) => m.seq),
      [1, 2],
      `${who.name} sees each message once, in seq order`,
    );
  }
});

await check(`bob's instance gets SIG${signal} while alice sends ${BURST}; bob's page shows all ${BURST}`, async () => {
  for (let n = 1; n <= BURST; n++) {
    await say(alice, `burst ${n}`);
    if (n === 10) process.kill(doomed.pid, `SIG${signal}`);
    await alice.page.waitForTimeout(40);
  }
  const last = 2 + BURST;
  await bob.page.waitForFunction(
    (seq) => document.querySelector(`[data-testid="message-list"] [data-seq="${seq}"]`) !== null,
    last,
    { timeout: 30000 },
  );
  const seen = await shown(bob.page);
  assert.deepEqual(
    seen.map((m) => m.seq),
    Array.from({ length: last }, (_, i) => i + 1),
    "consecutive seqs, no duplicate, no gap",
  );
  assert.deepEqual(
    seen.slice(2).map((m) => m.text),
    Array.from({ length: BURST }, (_, i) => `burst ${i + 1}`),
  );
  await bob.page.locator(`${tid("connection-status")}:is([data-state="resumed"], [data-state="connected"])`).waitFor({
    timeout: WAIT,
  });
  assert.equal(await instancePort(bob.page), survivor.port, "bob is on the instance that is left");
});

await check("the store holds the burst once, and no page showed an error", async () => {
  const response = await fetch(`${survivor.url}/api/chatrooms/${room}/messages?limit=200`);
  assert.equal(response.status, 200);
  const stored = await response.json();
  const burst = stored.filter((m) => m.content.startsWith("burst "));
  assert.equal(burst.length, BURST, "each burst message stored once");
  assert.deepEqual(problems(), []);
});

await finish();
