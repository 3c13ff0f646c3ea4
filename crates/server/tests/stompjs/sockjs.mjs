// A Spring-style front end's view of chat-server: two @stomp/stompjs clients on the real
// sockjs-client, over the transports named on the command line (or SockJS's own choice).
// alice sends a good message and a bad one; bob must hear hers, alice the error. Prints
// the transport each client ended up on; exits 0 when everything arrived as expected.
import { Client } from "@stomp/stompjs";
import SockJS from "sockjs-client";

// `default` lets SockJS choose; else a comma-separated list such as `xhr-streaming`.
const [address, roomArg, transportsArg] = process.argv.slice(2);
const room = Number(roomArg);
const transports = transportsArg && transportsArg !== "default" ? transportsArg.split(",") : undefined;
const fail = (why) => { console.error(`FAIL: ${why}`); process.exit(1); };

function connect(name) {
  let socket;
  const client = new Client({
    webSocketFactory: () => (socket = new SockJS(`http://${address}/ws`, null, transports ? { transports } : {})),
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    reconnectDelay: 0,
  });
  client.onStompError = (frame) => fail(`${name}: ERROR frame: ${frame.headers.message}`);
  const connected = new Promise((resolve) => { client.onConnect = () => resolve(); });
  client.activate();
  return { client, connected, transport: () => socket.transport };
}

const alice = connect("alice");
const bob = connect("bob");
setTimeout(() => fail("timed out"), 20000);
await Promise.all([alice.connected, bob.connected]);

const heard = new Promise((resolve) => {
  bob.client.subscribe(`/topic/chatroom/${room}`, (m) => resolve(JSON.parse(m.body)), { receipt: "bob-subscribed" });
});
const errored = new Promise((resolve) => {
  alice.client.subscribe("/user/queue/errors", (m) => resolve(JSON.parse(m.body)));
});
await new Promise((resolve) => bob.client.watchForReceipt("bob-subscribed", resolve));

// Long enough that the frame is split over several SockJS frames on the way in? No: one
// frame per publish; the size shows nothing is truncated.
const content = "hello over sockjs " + "x".repeat(3000);
alice.client.publish({
  destination: "/app/chat.sendMessage",
  body: JSON.stringify({ chatRoomId: room, senderId: 7, senderNickname: "alice", content }),
});
alice.client.publish({ destination: "/app/chat.sendMessage", body: "{not json" });

const message = await heard;
if (message.content !== content || message.senderNickname !== "alice") fail(`bob heard ${JSON.stringify(message).slice(0, 200)}`);
const error = await errored;
if (error.code !== "INVALID_JSON") fail(`alice got error ${JSON.stringify(error)}`);
console.log(`OK alice=${alice.transport()} bob=${bob.transport()} seq=${message.seq} error=${error.code}`);
await Promise.all([alice.client.deactivate(), bob.client.deactivate()]);
process.exit(0);
