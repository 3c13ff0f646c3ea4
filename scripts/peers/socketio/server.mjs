// A Socket.IO chat server for chat-bench: the peer chat-service is compared with
// (scripts/bench, scenarios s and i). Same shape as chat-service, minus storage:
//
//   emit "join"  <room>            -> the socket joins the room; acked with {ok, room} once
//                                     it is subscribed (what a STOMP SUBSCRIBE receipt says)
//   emit "send"  {room, content, senderId?}
//                                  -> io.to(room).emit("message", {room, senderId, content})
//                                     through the Redis adapter, so sockets on every
//                                     instance get it; acked with {ok} if the client asked
//   emit "leave" <room>            -> leaves the room; acked. chat-bench's publishers end
//                                     with it: events are handled in order, so its ack
//                                     means every earlier "send" has been handled
//
// Nothing is stored, nothing is authenticated. WebSocket transport only (no long-polling).
//
// Environment:
//   PORT                 [18091]  listens on 127.0.0.1:PORT; GET /health/ready answers 200
//   REDIS_URL            [redis://127.0.0.1:6379]
//   SOCKETIO_KEY_PREFIX  [socket.io]  the adapter's channel prefix: give each run its own,
//                        so concurrent runs on a shared Redis never see each other
//
// Run: npm ci && PORT=18091 SOCKETIO_KEY_PREFIX=bench:$$ node server.mjs
// Stops on SIGTERM or SIGINT.

import { createServer } from "node:http";

import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const port = Number.parseInt(process.env.PORT ?? "18091", 10);
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const keyPrefix = process.env.SOCKETIO_KEY_PREFIX ?? "socket.io";
const tag = `socketio-peer :${port}`;

if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`${tag}: PORT must be a TCP port number, got ${process.env.PORT}`);
  process.exit(2);
}

// The adapter publishes on one client and pattern-subscribes on another.
const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
for (const [name, client] of [["publish", pubClient], ["subscribe", subClient]]) {
  // node-redis reconnects by itself; without a listener an error would kill the process.
  client.on("error", (error) => console.error(`${tag}: Redis ${name} client at ${redisUrl}: ${error.message}`));
}
try {
  await Promise.all([pubClient.connect(), subClient.connect()]);
} catch (error) {
  console.error(`${tag}: cannot connect to Redis at ${redisUrl} (${error.message}); is it running?`);
  process.exit(1);
}

const http = createServer((request, response) => {
  // Socket.IO answers /socket.io/ itself; everything else lands here.
  const ready = request.method === "GET" && request.url === "/health/ready";
  response.writeHead(ready ? 200 : 404, { "content-type": "text/plain" });
  response.end(ready ? "ready\n" : "not found\n");
});

const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  adapter: createAdapter(pubClient, subClient, { key: keyPrefix }),
});

const isRoom = (room) => typeof room === "string" && room.length > 0 && room.length <= 200;
const reply = (ack, body) => {
  if (typeof ack === "function") ack(body);
};

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (!isRoom(room)) return reply(ack, { ok: false, error: "room must be a non-empty string" });
    // With the Redis adapter join() is local and synchronous: the socket gets the next
    // broadcast to the room, whichever instance it comes from.
    socket.join(room);
    reply(ack, { ok: true, room });
  });

  socket.on("send", (message, ack) => {
    const room = message?.room;
    const content = message?.content;
    const senderId = Number.isSafeInteger(message?.senderId) ? message.senderId : null;
    if (!isRoom(room) || typeof content !== "string") {
      return reply(ack, { ok: false, error: "send needs {room: string, content: string}" });
    }
    io.to(room).emit("message", { room, senderId, content });
    reply(ack, { ok: true });
  });

  socket.on("leave", (room, ack) => {
    if (isRoom(room)) socket.leave(room);
    reply(ack, { ok: true });
  });
});

http.listen(port, "127.0.0.1", () => {
  console.error(`${tag}: listening on ws://127.0.0.1:${port}/socket.io/, Redis ${redisUrl}, key prefix ${keyPrefix}`);
});
http.on("error", (error) => {
  console.error(`${tag}: cannot listen on 127.0.0.1:${port}: ${error.message}`);
  process.exit(1);
});

let stopping = false;
const stop = async (signal) => {
  if (stopping) return;
  stopping = true;
  console.error(`${tag}: ${signal}, closing`);
  // A stuck close must not keep the bench script waiting.
  setTimeout(() => process.exit(0), 2000).unref();
  io.close();
  await Promise.allSettled([pubClient.quit(), subClient.quit()]);
  process.exit(0);
};
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
