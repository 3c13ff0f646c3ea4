// A browser front end's view of chat-server: @stomp/stompjs connects, subscribes to a room
// and to its errors queue, sends two good messages and one bad one, and checks what comes
// back. Exits 0 when everything arrived as expected, non-zero with a reason otherwise.
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";

// An optional third argument is a JWT, sent as a CONNECT header the way front ends do.
const [address, roomArg, token] = process.argv.slice(2);
const room = Number(roomArg);
const fail = (why) => { console.error(`FAIL: ${why}`); process.exit(1); };
const messages = [];
const errors = [];
let receipted = false;

const client = new Client({
  // Node 20 has no global WebSocket; browsers pass the same subprotocol list.
  webSocketFactory: () => new WebSocket(`ws://${address}/ws`, ["v10.stomp", "v11.stomp", "v12.stomp"]),
  connectHeaders: token ? { Authorization: `Bearer ${token}` } : {},
  heartbeatIncoming: 1000,
  heartbeatOutgoing: 1000,
  reconnectDelay: 0,
});

function finishIfDone() {
  if (messages.length < 2 || errors.length < 1 || !receipted) return;
  if (messages.map((m) => m.seq).join() !== "1,2") fail(`seqs ${messages.map((m) => m.seq)}`);
  if (messages[0].content !== "hello from stompjs") fail(`content ${messages[0].content}`);
  if (messages[0].chatRoomId !== room || messages[0].senderNickname !== "alice") fail("body fields");
  if (errors[0].code !== "INVALID_JSON") fail(`error code ${errors[0].code}`);
  console.log(`OK version=${client.connectedVersion} messages=${messages.length} errors=${errors.length}`);
  client.deactivate().then(() => process.exit(0));
}

client.onConnect = () => {
  client.subscribe("/user/queue/errors", (m) => { errors.push(JSON.parse(m.body)); finishIfDone(); });
  client.subscribe(`/topic/chatroom/${room}`, (m) => { messages.push(JSON.parse(m.body)); finishIfDone(); });
  client.watchForReceipt("sent-1", () => { receipted = true; finishIfDone(); });
  const send = (content) => JSON.stringify({ chatRoomId: room, senderId: 7, senderNickname: "alice", content });
  client.publish({ destination: "/app/chat.sendMessage", headers: { receipt: "sent-1" }, body: send("hello from stompjs") });
  client.publish({ destination: "/app/chat.sendMessage", body: "{not json" });
  client.publish({ destination: "/app/chat.sendMessage", body: send("second") });
};
client.onStompError = (frame) => fail(`ERROR frame: ${frame.headers.message}`);
client.onWebSocketClose = (event) => { if (event.code !== 1000) fail(`socket closed ${event.code}`); };
client.activate();
setTimeout(() => fail(`timed out: messages=${JSON.stringify(messages)} errors=${JSON.stringify(errors)} receipt=${receipted}`), 10000);
