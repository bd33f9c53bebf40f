// The client over WebSocket, against a fake socket driven from the server's side.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { ConnectionError, FatalError, RealtimeClient, ReplyError } from "../src/client.js";
import { FakeWebSocket, envelope, fakeJwt, record, sleep, waitFor } from "./fakes.js";

const FAST = { reconnectInterval: 10, maxReconnectDelay: 40, requestTimeout: 500, openTimeout: 500 };

const made = [];

function client(options = {}) {
  return made[made.push(new RealtimeClient({ url: "http://rt.test:8000", transport: "websocket", WebSocket: FakeWebSocket, ...FAST, ...options })) - 1];
}

/** Connect `rt`, greeting on socket number `count`; returns that socket. */
async function connected(rt, count = 1, data = {}) {
  const connecting = rt.connect();
  const socket = await FakeWebSocket.nth(count);
  socket.greet(data);
  await connecting;
  return socket;
}

/** Answer the `count`-th subscribe on `socket` as the server would: the reply, then the history. */
async function answerSubscribe(socket, { offset = 0, epoch = "", recovered = false, history = [], count = 1 } = {}) {
  const frame = await socket.request("subscribe", count);
  socket.reply(frame, "subscribed", { channel: frame.data.channel, offset, epoch, recovered });
  for (const item of history) socket.push(item);
  return frame;
}

beforeEach(() => {
  FakeWebSocket.instances.length = 0;
});

afterEach(async () => {
  await Promise.all(made.splice(0).map((rt) => rt.disconnect()));
});

test("connect() opens /ws/connect on the base URL, token as the subprotocol pair, and resolves on the greeting", async () => {
  const rt = client({ token: "jwt-1", url: "https://rt.test" });
  const events = record(rt, ["state", "connected"]);
  const socket = await connected(rt, 1, { connection_id: "c9", user_id: "alice", heartbeat_interval: 25 });
  assert.equal(socket.url, "wss://rt.test/ws/connect");
  assert.deepEqual(socket.protocols, ["access_token", "jwt-1"]);
  assert.equal(rt.state, "connected");
  assert.equal(rt.transport, "websocket");
  assert.deepEqual(events.of("state").map((change) => change.state), ["connecting", "connected"]);
  assert.deepEqual(events.of("connected"), [
    {
      transport: "websocket", connectionId: "c9", userId: "alice", heartbeatInterval: 25, channels: undefined,
      serverChannels: [], refused: {}, info: undefined, reconnected: false,
    },
  ]);
  await rt.disconnect();
});

test("a subscription gets its envelopes, the client every envelope and each type by name; duplicates are dropped", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news");
  const onSub = record(news, ["subscribed", "message", "news_update"]);
  const onClient = record(rt, ["message", "news_update", "notification"]);
  const first = envelope("news", "one", { offset: 1, type: "news_update" });
  const frame = await answerSubscribe(socket, { offset: 1, history: [first] });
  assert.deepEqual(frame.data, { channel: "news" });
  socket.push(first); // live delivery overlapping the replay
  socket.push(envelope("user:alice", { title: "hi" }, { type: "notification" }));
  await waitFor(() => onClient.of("notification").length === 1);
  assert.deepEqual(onSub.of("subscribed"), [{ channel: "news", resumed: false, recovered: false, position: null, epoch: null }]);
  assert.deepEqual(onSub.of("message").map((e) => e.content), ["one"]);
  assert.deepEqual(onSub.of("news_update").map((e) => e.id), [first.id]);
  assert.deepEqual(onClient.of("message").map((e) => e.content), ["one", { title: "hi" }]);
  assert.equal(news.state, "subscribed");
  assert.equal(news.position, 1);
  await rt.disconnect();
});

test("after a dropped connection every channel resumes from its last offset: missed messages once, in order", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news");
  const got = [];
  news.on("message", (e) => got.push(e.content));
  const old = [1, 2].map((n) => envelope("news", `m${n}`, { offset: n }));
  await answerSubscribe(socket, { offset: 2, history: old });
  const events = record(rt, ["disconnected", "connecting", "connected"]);
  socket.drop(1006);
  assert.equal(rt.state, "connecting");
  assert.equal(news.state, "subscribing");
  const second = await FakeWebSocket.nth(2);
  second.greet({ connection_id: "c2" });
  const missed = [3, 4].map((n) => envelope("news", `m${n}`, { offset: n }));
  const frame = await answerSubscribe(second, { offset: 4, recovered: true, history: [old[1], ...missed] });
  assert.deepEqual(frame.data, { channel: "news", since: 2 });
  await waitFor(() => got.length === 4);
  assert.deepEqual(got, ["m1", "m2", "m3", "m4"]);
  assert.equal(news.recovered, true);
  assert.equal(news.position, 4);
  assert.equal(events.of("disconnected")[0].reconnecting, true);
  assert.equal(events.of("disconnected")[0].code, 1006);
  assert.equal(events.of("connected")[0].reconnected, true);
  await rt.disconnect();
});

test("a resumption that history no longer reaches is reported as a gap, and the server's head becomes the position", async () => {
  const rt = client();
  const socket = await connected(rt);
  const quotes = rt.subscribe("quotes");
  await answerSubscribe(socket, { offset: 1, history: [envelope("quotes", "q1", { offset: 1 })] });
  socket.drop(1001);
  const second = await FakeWebSocket.nth(2);
  second.greet();
  const events = record(quotes, ["gap", "subscribed"]);
  await answerSubscribe(second, { offset: 9, recovered: false });
  await waitFor(() => events.length === 2);
  assert.deepEqual(events.map(([name]) => name), ["gap", "subscribed"]);
  assert.deepEqual(events.of("subscribed")[0], { channel: "quotes", resumed: true, recovered: false, position: 9, epoch: null });
  assert.equal(quotes.position, 9);
  assert.equal(quotes.recovered, false);
  await rt.disconnect();
});

test("subscriptions survive disconnect() and connect(), resuming from their position", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news", { since: 40 });
  const first = await answerSubscribe(socket, { offset: 41, recovered: true, history: [envelope("news", "x", { offset: 41 })] });
  assert.deepEqual(first.data, { channel: "news", since: 40 });
  await waitFor(() => news.position === 41);
  await rt.disconnect();
  assert.equal(rt.state, "disconnected");
  assert.equal(news.state, "subscribing");
  assert.equal(socket.closedBy.code, 1000);
  await sleep(60);
  assert.equal(FakeWebSocket.instances.length, 1, "no reconnection after disconnect()");
  const second = await connected(rt, 2);
  const again = await answerSubscribe(second, { offset: 41, recovered: true });
  assert.deepEqual(again.data, { channel: "news", since: 41 });
  await news.ready();
  await rt.disconnect();
});

test("heartbeats are answered with pong", async () => {
  const rt = client();
  const socket = await connected(rt);
  socket.push({ type: "heartbeat", timestamp: "now" });
  assert.deepEqual(socket.frames("pong"), [{ action: "pong" }]);
  await rt.disconnect();
});

test("two heartbeat intervals of silence count as a dead connection", async () => {
  const rt = client();
  const socket = await connected(rt, 1, { heartbeat_interval: 0.03 });
  await FakeWebSocket.nth(2);
  assert.equal(socket.readyState >= 2, true);
  await rt.disconnect();
});

test("reconnection delays grow with jitter up to maxReconnectDelay, and the client keeps trying", async () => {
  const rt = client({ random: () => 0.999, reconnectInterval: 5, maxReconnectDelay: 20 });
  const waits = record(rt, ["connecting"]);
  rt.connect();
  for (let n = 1; n <= 6; n++) (await FakeWebSocket.nth(n)).drop(1006);
  await FakeWebSocket.nth(7);
  const delays = waits.of("connecting").slice(1).map((context) => context.delay);
  assert.deepEqual(delays.slice(0, 6), [4, 9, 19, 19, 19, 19]);
  assert.deepEqual(waits.of("connecting").slice(1, 3).map((c) => c.attempt), [1, 2]);
  await rt.disconnect();
});

test("1013, 4429, 1001 and an administrator's 4409 are retried", async () => {
  const rt = client();
  const waits = record(rt, ["connecting"]);
  const socket = await connected(rt);
  const codes = [1013, 4429, 1001, 4409];
  socket.drop(codes[0]);
  for (let n = 1; n < codes.length; n++) (await FakeWebSocket.nth(n + 1)).drop(codes[n]);
  await FakeWebSocket.nth(codes.length + 1);
  assert.deepEqual(waits.of("connecting").slice(1).map((c) => c.code), codes);
  assert.equal(rt.state, "connecting");
  await rt.disconnect();
});

test("4401 with no way to get a token stops the client and says why", async () => {
  const rt = client({ token: "expired" });
  const events = record(rt, ["disconnected", "error"]);
  const connecting = rt.connect();
  (await FakeWebSocket.nth(1)).drop(4401);
  const error = await connecting.then(() => null, (e) => e);
  assert.ok(error instanceof FatalError);
  assert.equal(error.code, "unauthenticated");
  assert.equal(error.closeCode, 4401);
  assert.equal(rt.state, "disconnected");
  assert.equal(rt.error, error);
  assert.deepEqual(events.of("disconnected")[0], { code: 4401, status: undefined, reason: "authentication failed or expired", reconnecting: false, error });
  assert.equal(events.of("error")[0].error, error);
  await sleep(60);
  assert.equal(FakeWebSocket.instances.length, 1, "not retried");
});

test("4403 (origin or IP) is final", async () => {
  const rt = client();
  const connecting = rt.connect();
  (await FakeWebSocket.nth(1)).drop(4403);
  await assert.rejects(connecting, (error) => error instanceof FatalError && error.code === "forbidden");
  await sleep(40);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("a refused token is replaced through getToken; a fresh token refused as well is final", async () => {
  const tokens = ["t1", "t2", "t3"];
  const rt = client({ getToken: async () => tokens.shift() });
  const socket = await connected(rt);
  assert.deepEqual(socket.protocols, ["access_token", "t1"]);
  socket.drop(4401); // expired while connected
  const second = await FakeWebSocket.nth(2);
  assert.deepEqual(second.protocols, ["access_token", "t2"]);
  second.drop(4401); // the new one is refused too: retrying cannot help
  await waitFor(() => rt.state === "disconnected");
  assert.equal(rt.error.code, "unauthenticated");
  assert.deepEqual(tokens, ["t3"]);
});

test("the token is refreshed before it expires with the refresh action, and again after that", async () => {
  const issued = [];
  const rt = client({
    getToken: () => {
      issued.push(fakeJwt("alice", 3));
      return issued.at(-1);
    },
  });
  const socket = await connected(rt);
  assert.equal(socket.protocols[1], issued[0]);
  const refresh = await waitFor(() => socket.frames("refresh")[0], { timeout: 3000, what: "a refresh" });
  assert.deepEqual(refresh.data, { token: issued[1] });
  socket.reply(refresh, "refreshed", { expires_at: 0 });
  const next = await waitFor(() => socket.frames("refresh")[1], { timeout: 3000, what: "a second refresh" });
  assert.deepEqual(next.data, { token: issued[2] });
  assert.equal(FakeWebSocket.instances.length, 1, "the connection stayed open");
  await rt.disconnect();
});

test("requests resolve with the reply's content and reject with the server's error code", async () => {
  const rt = client();
  const socket = await connected(rt);
  const ack = rt.publish("news", { title: "hi" }, { persist: true, type: "news_update" });
  const frame = await socket.request("send_to_channel");
  assert.deepEqual(frame.data, { channel: "news", content: { title: "hi" }, type: "news_update", persist: true });
  socket.reply(frame, "ack", { id: "e1", offset: 3 });
  assert.deepEqual(await ack, { id: "e1", offset: 3 });

  const refused = rt.sendToUser("bob", "psst");
  const userFrame = await socket.request("send_to_user");
  assert.deepEqual(userFrame.data, { user_id: "bob", content: "psst" });
  socket.push({ type: "error", content: { type: "invalid_message", error: "bad", fields: { user_id: "too long" } }, request_id: userFrame.request_id });
  const error = await refused.then(() => null, (e) => e);
  assert.ok(error instanceof ReplyError);
  assert.equal(error.code, "invalid_message");
  assert.deepEqual(error.fields, { user_id: "too long" });

  const echo = rt.send({ hello: "server" });
  const messageFrame = await socket.request("message");
  assert.deepEqual(messageFrame.data, { content: { hello: "server" } });
  socket.reply(messageFrame, "ack", { id: "e2" });
  assert.deepEqual(await echo, { id: "e2" });

  const history = rt.history("news", { since: 2, limit: 10 });
  const historyFrame = await socket.request("history");
  assert.deepEqual(historyFrame.data, { channel: "news", since: 2, limit: 10 });
  socket.reply(historyFrame, "history", { channel: "news", offset: 3, messages: [], recovered: true, has_more: false });
  assert.equal((await history).offset, 3);

  const presence = rt.presence("presence-lobby");
  const presenceFrame = await socket.request("presence");
  socket.reply(presenceFrame, "presence", { channel: "presence-lobby", connections: 2, users: ["a", "b"] });
  assert.deepEqual((await presence).users, ["a", "b"]);
  await rt.disconnect();
});

test("a request with no reply times out; one in flight when the connection drops is rejected, not resent", async () => {
  const rt = client({ requestTimeout: 50 });
  const socket = await connected(rt);
  await assert.rejects(rt.ping(), (e) => e instanceof ConnectionError && e.code === "timeout");
  const lost = rt.publish("news", "x");
  await socket.request("send_to_channel");
  socket.drop(1006);
  await assert.rejects(lost, (e) => e instanceof ConnectionError && e.code === "connection_lost");
  const second = await FakeWebSocket.nth(2);
  second.greet();
  await sleep(10);
  assert.equal(second.frames("send_to_channel").length, 0);
  await rt.disconnect();
});

test("a request made while reconnecting is sent once connected; while disconnected it is refused", async () => {
  const rt = client();
  await assert.rejects(rt.ping(), (e) => e.code === "not_connected");
  const socket = await connected(rt);
  socket.drop(1006);
  const ack = rt.publish("news", "later");
  const second = await FakeWebSocket.nth(2);
  second.greet();
  const frame = await second.request("send_to_channel");
  second.reply(frame, "ack", { id: "e5" });
  assert.deepEqual(await ack, { id: "e5" });
  await rt.disconnect();
});

test("a subscription the server refuses ends with the error; ready() rejects with it", async () => {
  const rt = client();
  const socket = await connected(rt);
  const payroll = rt.subscribe("private-payroll");
  const events = record(payroll, ["unsubscribed", "error"]);
  const ready = payroll.ready();
  const frame = await socket.request("subscribe");
  socket.push({ type: "error", content: { type: "forbidden", error: "no grant" }, request_id: frame.request_id });
  await assert.rejects(ready, (e) => e instanceof ReplyError && e.code === "forbidden");
  assert.equal(payroll.state, "unsubscribed");
  assert.equal(events.of("error")[0].error.code, "forbidden");
  assert.equal(rt.getSubscription("private-payroll"), null);
  await rt.disconnect();
});

test("unsubscribe() leaves the channel: the server is told and it is not restored after a reconnection", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news");
  rt.subscribe("alerts");
  await answerSubscribe(socket);
  await answerSubscribe(socket, { count: 2 });
  const leaving = news.unsubscribe();
  const frame = await socket.request("unsubscribe");
  assert.deepEqual(frame.data, { channel: "news" });
  socket.reply(frame, "unsubscribed", { channel: "news" });
  await leaving;
  assert.equal(news.state, "unsubscribed");
  socket.drop(1006);
  const second = await FakeWebSocket.nth(2);
  second.greet();
  await second.request("subscribe");
  await sleep(10);
  assert.deepEqual(second.frames("subscribe").map((f) => f.data.channel), ["alerts"]);
  await rt.disconnect();
});

test("an envelope whose type is a lifecycle name reaches `message` only", async () => {
  const rt = client();
  const socket = await connected(rt);
  const events = record(rt, ["message", "disconnected", "connecting", "state"]);
  socket.push(envelope(null, "odd", { type: "disconnected" }));
  assert.deepEqual(events.map(([name]) => name), ["message"]);
  await rt.disconnect();
});

test("a channel name the server would refuse is refused at once", () => {
  const rt = client();
  assert.throws(() => rt.subscribe("bad name"), (e) => e.code === "invalid_channel");
  assert.throws(() => rt.subscribe("-x"), (e) => e.code === "invalid_channel");
});

test("maxReconnectAttempts failed attempts in a row give up; autoReconnect false does not retry", async () => {
  const rt = client({ maxReconnectAttempts: 2 });
  const socket = await connected(rt);
  socket.drop(1006);
  (await FakeWebSocket.nth(2)).drop(1006);
  (await FakeWebSocket.nth(3)).drop(1006);
  await waitFor(() => rt.state === "disconnected");
  assert.equal(rt.error.code, "gave_up");
  assert.equal(FakeWebSocket.instances.length, 3);

  const once = client({ autoReconnect: false });
  const events = record(once, ["disconnected"]);
  const only = await connected(once, 4);
  only.drop(1001);
  assert.equal(once.state, "disconnected");
  assert.equal(events.of("disconnected")[0].code, 1001);
  await sleep(40);
  assert.equal(FakeWebSocket.instances.length, 4);
});

test("connect() during the wait between attempts tries at once", async () => {
  const rt = client({ reconnectInterval: 5000, maxReconnectDelay: 5000, random: () => 0.99 });
  const socket = await connected(rt);
  socket.drop(1006);
  await sleep(20);
  assert.equal(FakeWebSocket.instances.length, 1);
  const again = rt.connect();
  (await FakeWebSocket.nth(2)).greet();
  await again;
  assert.equal(rt.state, "connected");
  await rt.disconnect();
});

test("trace reports frames in and out without credentials", async () => {
  const token = fakeJwt("alice", 3);
  const rt = client({ getToken: () => token, apiKey: "secret-key" });
  const lines = [];
  rt.on("trace", (t) => lines.push(`${t.direction} ${t.label} ${t.text}`));
  const socket = await connected(rt);
  assert.ok(socket.url.endsWith("?api_key=secret-key"));
  const refresh = await waitFor(() => socket.frames("refresh")[0], { timeout: 3000 });
  assert.equal(refresh.data.token, token);
  const log = lines.join("\n");
  assert.match(log, /out open ws:\/\/rt\.test:8000\/ws\/connect\?api_key=\[redacted\] \(token as subprotocol\)/);
  assert.match(log, /in connected/);
  assert.match(log, /out refresh .*"token":"\[redacted\]"/);
  assert.ok(!log.includes(token) && !log.includes("secret-key"), log);
  await rt.disconnect();
});

test("a resubscription sends its epoch with since; a reply of another epoch is a reset: stream-reset, gap, subscribed", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news");
  const history = [1, 2, 3].map((n) => envelope("news", `m${n}`, { offset: n }));
  await answerSubscribe(socket, { offset: 3, epoch: "e1", history });
  await waitFor(() => news.position === 3);
  assert.equal(news.epoch, "e1");
  const events = record(news, ["stream-reset", "gap", "subscribed", "message"]);
  const onClient = record(rt, ["stream-reset", "message"]);

  socket.drop(1006); // meanwhile the channel's history is reset and one message is published under e2
  const second = await FakeWebSocket.nth(2);
  second.greet();
  const frame = await answerSubscribe(second, { offset: 1, epoch: "e2", recovered: false });
  assert.deepEqual(frame.data, { channel: "news", since: 3, epoch: "e1" });
  await waitFor(() => events.of("subscribed").length === 1);
  assert.deepEqual(events.map(([name]) => name), ["stream-reset", "gap", "subscribed"]);
  const reset = { channel: "news", epoch: "e2", position: 1, resumed: true };
  assert.deepEqual(events.of("stream-reset"), [reset]);
  assert.deepEqual(onClient.of("stream-reset"), [reset]);
  assert.deepEqual(events.of("gap"), [{ channel: "news", position: 1, epoch: "e2" }]);
  assert.deepEqual(events.of("subscribed")[0], { channel: "news", resumed: true, recovered: false, position: 1, epoch: "e2" });
  assert.equal(news.recovered, false);
  second.push(envelope("news", "m2 of e2", { offset: 2 }));
  assert.equal(news.position, 2);

  second.drop(1006); // now the history is only trimmed: a gap within the same epoch, not a reset
  const third = await FakeWebSocket.nth(3);
  third.greet();
  const again = await answerSubscribe(third, { offset: 9, epoch: "e2", recovered: false });
  assert.deepEqual(again.data, { channel: "news", since: 2, epoch: "e2" });
  await waitFor(() => events.of("subscribed").length === 2);
  assert.equal(events.of("stream-reset").length, 1);
  assert.equal(events.of("gap").length, 2);
  assert.equal(news.position, 9);
  await rt.disconnect();
});

test("a stream-reset frame restarts a live subscription's position at 0 of the new epoch and is reported", async () => {
  const rt = client();
  const socket = await connected(rt);
  const news = rt.subscribe("news");
  await answerSubscribe(socket, { offset: 5, epoch: "e1" });
  await news.ready();
  const events = record(news, ["stream-reset", "gap", "message"]);
  const onClient = record(rt, ["stream-reset", "message"]);

  socket.push({ type: "stream-reset", content: { channel: "news", epoch: "e2", offset: 0 } });
  socket.push({ type: "stream-reset", content: { channel: "user:alice", epoch: "u7", offset: 0 } }); // no subscription
  assert.deepEqual(events.of("stream-reset"), [{ channel: "news", epoch: "e2", position: 0, resumed: false }]);
  assert.deepEqual(onClient.of("stream-reset"), [
    { channel: "news", epoch: "e2", position: 0, resumed: false },
    { channel: "user:alice", epoch: "u7", position: 0, resumed: false },
  ]);
  assert.deepEqual([news.position, news.epoch, news.state], [0, "e2", "subscribed"]);
  assert.equal(events.of("gap").length + onClient.of("message").length, 0, "neither a gap nor a message");
  socket.push(envelope("news", "first of e2", { offset: 1 }));
  assert.equal(news.position, 1);

  socket.drop(1006);
  const second = await FakeWebSocket.nth(2);
  second.greet();
  const frame = await answerSubscribe(second, { offset: 1, epoch: "e2", recovered: true });
  assert.deepEqual(frame.data, { channel: "news", since: 1, epoch: "e2" });
  await rt.disconnect();
});

test("server-side channels of the greeting are subscriptions at once, resumed from their position, ended when dropped", async () => {
  const rt = client();
  const news = rt.subscribe("news");
  const socket = await connected(rt, 1, { channels: ["alerts", "news"], refused: { "private-x": "no grant" }, info: { plan: "pro" } });
  assert.deepEqual(rt.connection.serverChannels, ["alerts", "news"]);
  assert.deepEqual(rt.connection.refused, { "private-x": "no grant" });
  assert.deepEqual(rt.connection.info, { plan: "pro" });
  const alerts = rt.getSubscription("alerts");
  assert.ok(alerts);
  assert.deepEqual([alerts.serverSide, alerts.state, news.serverSide], [true, "subscribed", false]);
  await answerSubscribe(socket); // the explicit one is subscribed as before
  await sleep(10);
  assert.deepEqual(socket.frames("subscribe").map((f) => f.data.channel), ["news"], "no subscribe for a joined channel");
  const got = record(alerts, ["message", "unsubscribed"]);
  socket.push(envelope("alerts", "fire", { offset: 4 }));
  assert.deepEqual(got.of("message").map((e) => e.content), ["fire"]);
  assert.equal(alerts.position, 4);

  socket.drop(1006);
  const second = await FakeWebSocket.nth(2);
  second.greet({ channels: ["alerts"] });
  const frames = await waitFor(() => second.frames("subscribe").length === 2 && second.frames("subscribe"));
  assert.deepEqual(frames.map((f) => f.data).sort((a, b) => a.channel.localeCompare(b.channel)), [
    { channel: "alerts", since: 4 },
    { channel: "news", since: 0 },
  ]);
  assert.equal(rt.getSubscription("alerts"), alerts);

  second.drop(1006);
  const third = await FakeWebSocket.nth(3);
  third.greet(); // the server no longer joins it
  await waitFor(() => alerts.state === "unsubscribed");
  assert.deepEqual(got.of("unsubscribed"), [{ channel: "alerts", error: null }]);
  assert.equal(rt.getSubscription("alerts"), null);
  await third.request("subscribe");
  await sleep(10);
  assert.deepEqual(third.frames("subscribe").map((f) => f.data.channel), ["news"]);
  await rt.disconnect();
});

test("presence with countsOnly asks for the counts alone; history passes an epoch", async () => {
  const rt = client();
  const socket = await connected(rt);
  const counts = rt.presence("lobby", { countsOnly: true });
  const frame = await socket.request("presence");
  assert.deepEqual(frame.data, { channel: "lobby", counts_only: true });
  socket.reply(frame, "presence", { channel: "lobby", connections: 3, user_count: 2 });
  assert.deepEqual(await counts, { channel: "lobby", connections: 3, user_count: 2 });

  const history = rt.history("news", { since: 4, epoch: "e1" });
  const historyFrame = await socket.request("history");
  assert.deepEqual(historyFrame.data, { channel: "news", since: 4, epoch: "e1" });
  socket.reply(historyFrame, "history", { channel: "news", offset: 1, epoch: "e2", messages: [], recovered: false, has_more: false });
  assert.equal((await history).epoch, "e2");
  await rt.disconnect();
});
