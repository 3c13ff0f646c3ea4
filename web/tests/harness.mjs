// What the browser tests share: Chromium launched as these machines allow, people (one
// browser context each, with their page errors and sent WebSocket frames collected), and
// numbered checks that stop at the first failure with what each page showed.
import net from "node:net";
import { chromium } from "playwright-core";

export const WAIT = 10000;
export const tid = (id) => `[data-testid="${id}"]`;

export async function startBrowser(label) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const people = [];
  let passed = 0;
  const cleanups = [];

  async function finish(failed) {
    await browser.close();
    for (const cleanup of cleanups) cleanup();
    console.log(`${label}: ${passed} passed, ${failed} failed`);
    if (failed) process.exit(1);
  }

  return {
    browser,
    /** Runs something to do when the browser closes. */
    onFinish(cleanup) {
      cleanups.push(cleanup);
    },
    async check(name, body) {
      try {
        await body();
      } catch (error) {
        console.error(`not ok - ${name}\n${error.stack || error}`);
        for (const who of people) {
          if (who.problems.length) console.error(who.problems.join("\n"));
          const status = await who.page.locator(tid("connection-status")).textContent({ timeout: 1000 }).catch(() => "?");
          const banner = await who.page.locator(tid("error-banner")).textContent({ timeout: 1000 }).catch(() => "?");
          console.error(`${who.name}: status "${status}", error banner "${banner}"`);
        }
        await finish(1);
      }
      passed += 1;
      console.log(`ok - ${name}`);
    },
    /** A person at the page at `base`: their own browser context. */
    async person(name, base) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      const problems = [];
      page.on("pageerror", (error) => problems.push(`${name}: page error: ${error.message}`));
      page.on("console", (message) => {
        // The page asks an unauthenticated room listing whether the server wants a token
        // (401 in jwt mode); Chromium logs every 401 it is answered.
        const expected = /status of 401/.test(message.text());
        if (message.type() === "error" && !expected) problems.push(`${name}: console error: ${message.text()}`);
      });
      const frames = [];
      page.on("websocket", (socket) => {
        socket.on("framesent", (frame) => frames.push(String(frame.payload)));
      });
      const who = { name, base, context, page, problems, frames };
      people.push(who);
      return who;
    },
    /** Page errors and console errors (CSP violations among them) of everyone. */
    problems() {
      return people.flatMap((who) => who.problems);
    },
    finish: () => finish(0),
  };
}

/** Signs `who` in with their name as the nickname (open mode) and waits until connected. */
export async function signIn(who) {
  await who.page.goto(who.base);
  await who.page.getByLabel("Nickname").fill(who.name);
  await who.page.locator(tid("login-submit")).click();
  await who.page.locator(`${tid("connection-status")}[data-state="connected"]`).waitFor({ timeout: WAIT });
}

/** The seqs and texts of the messages a page shows, in page order. */
export async function shown(page) {
  return page.locator(`${tid("message-list")} [data-seq]`).evaluateAll((items) =>
    items.map((item) => ({ seq: Number(item.dataset.seq), text: item.querySelector(".content").textContent })),
  );
}

export function serverUrl(usage) {
  const base = process.argv[2];
  if (!base || !/^https?:\/\//.test(base)) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return base.replace(/\/$/, "");
}

/**
 * A TCP relay in front of the server, so that a test can drop a page's connections (HTTP
 * and WebSocket alike) and refuse new ones for a while, as a network blip would.
 */
export async function relay(target) {
  const { hostname, port } = new URL(target);
  const open = new Set();
  const state = { refusing: false };
  const server = net.createServer((client) => {
    if (state.refusing) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    const pair = [client, upstream];
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Drops every connection and refuses new ones until `restore()`. */
    cut() {
      state.refusing = true;
      for (const [client, upstream] of open) {
        client.destroy();
        upstream.destroy();
      }
      open.clear();
    },
    restore() {
      state.refusing = false;
    },
    close() {
      server.close();
    },
  };
}
