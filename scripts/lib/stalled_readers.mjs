// Opens N STOMP subscribers to one room that then stop reading (their sockets paused, so
// the server's writes back up), publishes into the room from one reading client, and
// samples the server's RSS and open sessions until the write timeout has released them.
// Prints one JSON line. Used by scripts/stalled-readers; `ws` comes from the stompjs test
// client's node_modules.
//
//   node stalled_readers.mjs HOST:PORT ROOM PID N MESSAGES SIZE WAIT_SECS
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

// `ws` from the directory CLIENT_DIR names (the stompjs test client's install).
const WebSocket = createRequire(`${process.env.CLIENT_DIR}/package.json`)("ws");

const [address, roomArg, pidArg, nArg, messagesArg, sizeArg, waitArg] = process.argv.slice(2);
const room = Number(roomArg);
const n = Number(nArg);
const messages = Number(messagesArg);
const size = Number(sizeArg);
const waitSecs = Number(waitArg);
const url = `ws://${address}/ws`;

const rssBytes = () => {
  const status = readFileSync(`/proc/${pidArg}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
};
const sessions = async () => {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("chat_connections_current "));
  return Number(line.split(" ")[1]);
};
const frame = (command, headers, body = "") =>
  `${command}\n${Object.entries(headers).map(([k, v]) => `${k}:${v}`).join("\n")}\n\n${body}\0`;

function subscriber(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ["v12.stomp"]);
    let buffer = "";
    ws.on("open", () => ws.send(frame("CONNECT", { "accept-version": "1.2", "heart-beat": "0,0" })));
    ws.on("message", (data) => {
      buffer += data.toString();
      if (buffer.includes("CONNECTED") && !buffer.includes("SUBSCRIBE-SENT")) {
        buffer += "SUBSCRIBE-SENT";
        ws.send(frame("SUBSCRIBE", { id: "s", destination: `/topic/chatroom/${room}`, receipt: `r${i}` }));
      }
      if (buffer.includes(`receipt-id:r${i}`)) {
        ws._socket.pause(); // stop reading: the server's writes now back up
        resolve(ws);
      }
    });
    ws.on("error", reject);
  });
}

const baseline = rssBytes();
const stalled = [];
for (let i = 0; i < n; i += 250) {
  const batch = [];
  for (let j = i; j < Math.min(n, i + 250); j++) batch.push(subscriber(j));
  stalled.push(...(await Promise.all(batch)));
}
const subscribed = rssBytes();

const publisher = new WebSocket(url, ["v12.stomp"]);
await new Promise((resolve) => publisher.on("open", resolve));
publisher.send(frame("CONNECT", { "accept-version": "1.2", "heart-beat": "0,0" }));
await new Promise((resolve) => publisher.once("message", resolve));
// Room for the counter in front: content stays within the 4,000-character limit.
const content = "x".repeat(Math.max(1, size - 12));
const started = Date.now();
for (let m = 0; m < messages; m++) {
  publisher.send(frame("SEND", { destination: "/app/chat.sendMessage", "content-type": "application/json" },
    JSON.stringify({ chatRoomId: room, senderId: 1, senderNickname: "load", content: `${m} ${content}` })));
  if (m % 50 === 0) await new Promise((r) => setTimeout(r, 5));
}

let peak = rssBytes();
const samples = [];
for (let t = 0; t < waitSecs; t++) {
  await new Promise((r) => setTimeout(r, 1000));
  const rss = rssBytes();
  peak = Math.max(peak, rss);
  samples.push({ t: Math.round((Date.now() - started) / 1000), rss_mb: Math.round(rss / 1048576), sessions: await sessions() });
}
console.log(JSON.stringify({
  label: "stalled-readers", stalled: n, messages, size,
  rss_baseline_mb: Math.round(baseline / 1048576),
  rss_subscribed_mb: Math.round(subscribed / 1048576),
  rss_peak_mb: Math.round(peak / 1048576),
  rss_end_mb: Math.round(rssBytes() / 1048576),
  sessions_end: await sessions(),
  samples,
}));
process.exit(0);
