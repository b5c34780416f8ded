// One Socket.IO 4 node with the Redis adapter: the peer that bench.peers measures.
//
//   node server.js --port 9001 --redis redis://127.0.0.1:6379 --name sio1
//
// It has the endpoints the sessionws node of tests/cluster/node.py has for the same
// measurement, and nothing more:
//
// * POST /login?user=U  -> {"session": S}: a new session id (the room its sockets join).
// * GET  /socket.io/?EIO=4&transport=websocket&session=S: a socket that joins room S and
//   then emits "hello" (so the client knows it has joined).
// * POST /close?key=S   -> {"called_at": T}: io.in(S).disconnectSockets(true), the
//   adapter's cluster-wide close; T is the monotonic clock (CLOCK_MONOTONIC, which is
//   Python's time.monotonic() on Linux) just before the call, as the sessionws node does.
// * GET  /health        -> {"healthy": true} once the adapter's Redis clients are connected.
//
// Prints "ready" on stdout once listening; exits when its stdin closes (its parent died).
"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const port = Number(option("port", "9001"));
const redisUrl = option("redis", "redis://127.0.0.1:6379");
const name = option("name", "sio");

function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function reply(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  response.end(text);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on("error", (error) => console.error(`${name} redis: ${error}`));
  sub.on("error", (error) => console.error(`${name} redis: ${error}`));
  await Promise.all([pub.connect(), sub.connect()]);

  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://localhost");
    if (request.method === "POST" && url.pathname === "/close") {
      const key = url.searchParams.get("key");
      if (!key) return reply(response, 400, { error: "give ?key=" });
      const calledAt = monotonic();
      io.in(key).disconnectSockets(true);
      return reply(response, 200, { called_at: calledAt });
    }
    if (request.method === "POST" && url.pathname === "/login") {
      return reply(response, 200, { session: crypto.randomBytes(16).toString("base64url") });
    }
    if (url.pathname === "/health") {
      return reply(response, 200, { healthy: true, name });
    }
    return reply(response, 404, { error: "no such endpoint" });
  });
  const io = new Server(server, { transports: ["websocket"], serveClient: false });
  io.adapter(createAdapter(pub, sub));
  io.on("connection", (socket) => {
    const session = socket.handshake.query.session;
    if (typeof session !== "string" || !session) {
      socket.disconnect(true);
      return;
    }
    socket.join(session);
    socket.emit("hello", { node: name });
  });
  server.listen(port, "127.0.0.1", () => process.stdout.write("ready\n"));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
