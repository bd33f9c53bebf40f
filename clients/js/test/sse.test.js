// The client over Server-Sent Events and the `auto` fallback, against fake streams and sockets.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { ConnectionError, FatalError, RealtimeClient } from "../src/client.js";
import { FakeWebSocket, envelope, fakeFetch, fakeJwt, record, sleep, waitFor } from "./fakes.js";

const FAST = { reconnectInterval: 10, maxReconnectDelay: 40, requestTimeout: 500, openTimeout: 500 };
const made = [];

function client(options = {}) {
  const rt = new RealtimeClient({ url: "http://rt.test:8000", transport: "sse", WebSocket: FakeWebSocket, ...FAST, ...options });
  made.push(rt);
  return rt;
}

beforeEach(() => {
  FakeWebSocket.instances.length = 0;
});

afterEach(async () => {
  await Promise.all(made.splice(0).map((rt) => rt.disconnect()));
});

test("the stream URL carries the channels and the token; envelopes of every type are delivered", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch, token: "jwt-1" });
  const news = rt.subscribe("news");
  rt.subscribe("user:alice");
  const connecting = rt.connect();
  const request = await fetch.nth(1);
  assert.equal(request.url.origin + request.url.pathname, "http://rt.test:8000/sse/connect");
  assert.equal(request.param("channels"), "news,user:alice");
  assert.equal(request.param("token"), "jwt-1");
  assert.equal(request.param("lastEventId"), null);
  assert.equal(request.init.headers.Accept, "text/event-stream");
  const types = record(rt, ["message", "news_update", "price"]);
  const subscribed = record(news, ["subscribed", "message"]);
  request.greet({ user_id: "alice" });
  await connecting;
  assert.equal(rt.transport, "sse");
  assert.deepEqual(rt.connection.channels, ["news", "user:alice", "broadcast"]);
  request.envelope(envelope("news", { title: "Hello" }, { type: "news_update", offset: 1 }), "news:1,user%3Aalice:0");
  request.send("stream-open", { channels: ["news", "user:alice"], offsets: { news: 1, "user:alice": 0 } }, "news:1,user%3Aalice:0");
  request.envelope(envelope("news", 42, { type: "price" }));
  await waitFor(() => types.of("price").length === 1);
  assert.deepEqual(types.of("news_update").map((e) => e.content), [{ title: "Hello" }]);
  assert.equal(types.of("message").length, 2);
  assert.equal(news.position, 1);
  assert.equal(rt.getSubscription("user:alice").position, 0);
  assert.deepEqual(subscribed.of("subscribed"), [{ channel: "news", resumed: false, recovered: false, position: 1, epoch: null }]);
  assert.equal(news.state, "subscribed");
});

test("publishing and other requests reject with `unsupported` on SSE", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const connecting = rt.connect();
  (await fetch.nth(1)).greet();
  await connecting;
  for (const attempt of [rt.publish("news", "x"), rt.sendToUser("bob", "x"), rt.send("x"), rt.history("news"), rt.presence("p")]) {
    await assert.rejects(attempt, (e) => e instanceof ConnectionError && e.code === "unsupported" && /HTTP API/.test(e.message));
  }
});

test("changing subscriptions reopens the stream once, with the new channel list and the last position", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  rt.subscribe("news");
  const connecting = rt.connect();
  const first = (await fetch.nth(1)).greet();
  await connecting;
  first.envelope(envelope("news", "n7", { offset: 7 }), "news:7");
  await waitFor(() => rt.getSubscription("news").position === 7);
  rt.subscribe("weather");
  rt.subscribe("sport");
  const second = await fetch.nth(2);
  assert.equal(first.aborted, true);
  assert.equal(second.param("channels"), "news,weather,sport");
  assert.equal(second.param("lastEventId"), "news:7");
  second.greet();
  await waitFor(() => rt.state === "connected");
  rt.getSubscription("sport").unsubscribe();
  const third = await fetch.nth(3);
  assert.equal(third.param("channels"), "news,weather");
  await sleep(20);
  assert.equal(fetch.requests.length, 3);
});

test("after the stream drops it resumes from the last id: replayed messages once, in order, and `recovered`", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const news = rt.subscribe("news");
  const got = [];
  news.on("message", (e) => got.push(e.content));
  rt.connect();
  const first = (await fetch.nth(1)).greet();
  const m1 = envelope("news", "m1", { offset: 1 });
  first.envelope(m1, "news:1");
  first.send("stream-open", { channels: ["news"], offsets: { news: 1 } }, "news:1");
  await waitFor(() => got.length === 1);
  first.end();
  const second = await fetch.nth(2);
  assert.equal(second.param("lastEventId"), "news:1");
  const events = record(news, ["subscribed", "gap"]);
  second.greet();
  second.envelope(m1, "news:1"); // overlapping replay
  second.envelope(envelope("news", "m2", { offset: 2 }), "news:2");
  second.send("stream-open", { channels: ["news"], offsets: { news: 2 } }, "news:2");
  await waitFor(() => events.length === 1);
  assert.deepEqual(got, ["m1", "m2"]);
  assert.deepEqual(events.of("subscribed"), [{ channel: "news", resumed: true, recovered: true, position: 2, epoch: null }]);
  assert.equal(news.recovered, true);
});

test("stream-reset is a gap on the subscription, and the reset's id is the new position", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const quotes = rt.subscribe("quotes", { since: 1 });
  const events = record(quotes, ["gap", "subscribed", "stream-reset"]);
  rt.connect();
  const request = await fetch.nth(1);
  assert.equal(request.param("lastEventId"), "quotes:1");
  request.greet();
  request.send("stream-reset", { channels: ["quotes"] }, "quotes:4");
  request.send("stream-open", { channels: ["quotes"], offsets: { quotes: 4 } }, "quotes:4");
  await waitFor(() => events.length === 2);
  assert.deepEqual(events.map(([name]) => name), ["gap", "subscribed"], "history trimmed: a gap, not a reset");
  assert.equal(events.of("subscribed")[0].recovered, false);
  assert.equal(quotes.position, 4);
});

test("HTTP 401 with no way to get a token, and 403, stop the client with the status", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const connecting = rt.connect();
  (await fetch.nth(1)).refuse(401, { type: "unauthenticated", error: "Authentication required." });
  const error = await connecting.then(() => null, (e) => e);
  assert.ok(error instanceof FatalError);
  assert.equal(error.code, "unauthenticated");
  assert.equal(error.status, 401);
  assert.match(error.message, /Authentication required/);

  const other = client({ fetch });
  other.subscribe("private-payroll");
  const refused = other.connect();
  (await fetch.nth(2)).refuse(403, { type: "forbidden", error: "needs a grant" });
  await assert.rejects(refused, (e) => e.code === "forbidden" && e.status === 403);
  await sleep(40);
  assert.equal(fetch.requests.length, 2);
});

test("503 is retried no sooner than its Retry-After; a network failure is retried", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const waits = record(rt, ["connecting"]);
  rt.connect();
  (await fetch.nth(1)).refuse(503, { type: "unavailable", error: "full" }, { "Retry-After": "1" });
  await waitFor(() => waits.of("connecting").length === 2);
  assert.equal(waits.of("connecting")[1].delay, 1000);
  assert.equal(waits.of("connecting")[1].status, 503);
  rt.connect(); // skip the wait
  (await fetch.nth(2)).fail();
  (await fetch.nth(3)).greet();
  await waitFor(() => rt.state === "connected");
});

test("a stream ended as unauthenticated gets a new token from getToken and reopens with it", async () => {
  const fetch = fakeFetch();
  const tokens = ["t1", "t2"];
  const rt = client({ fetch, getToken: () => tokens.shift() });
  rt.connect();
  const first = (await fetch.nth(1)).greet();
  assert.equal(first.param("token"), "t1");
  first.send("stream-error", { condition: "unauthenticated", text: "token expired" });
  first.end();
  const second = await fetch.nth(2);
  assert.equal(second.param("token"), "t2");
});

test("on SSE a token is renewed before expiry by reopening the stream with the new one", async () => {
  const fetch = fakeFetch();
  const issued = [];
  const rt = client({ fetch, getToken: () => issued[issued.push(fakeJwt("alice", 3)) - 1] });
  rt.subscribe("news", { since: 5 });
  rt.connect();
  (await fetch.nth(1)).greet();
  const second = await fetch.nth(2, { timeout: 3000 });
  assert.equal(second.param("token"), issued[1]);
  assert.equal(second.param("lastEventId"), "news:5");
});

test("auto: a refused WebSocket handshake falls back to SSE at once, and later reconnections stay on SSE", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch, transport: "auto" });
  const connecting = rt.connect();
  (await FakeWebSocket.nth(1)).drop(1006); // e.g. WEBSOCKET_ENABLED=false: daphne answers 403
  const stream = await fetch.nth(1);
  stream.greet();
  await connecting;
  assert.equal(rt.transport, "sse");
  stream.end();
  (await fetch.nth(2)).greet();
  await waitFor(() => rt.state === "connected");
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("auto: once a WebSocket worked, its failures are retried over WebSocket, not SSE", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch, transport: "auto" });
  const connecting = rt.connect();
  (await FakeWebSocket.nth(1)).greet();
  await connecting;
  FakeWebSocket.instances[0].drop(1006);
  (await FakeWebSocket.nth(2)).drop(1006);
  await FakeWebSocket.nth(3);
  assert.equal(fetch.requests.length, 0);
});

test("auto: when neither transport gets through, the next attempt starts with WebSocket again", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch, transport: "auto" });
  rt.connect();
  (await FakeWebSocket.nth(1)).drop(1006);
  (await fetch.nth(1)).fail(); // the server is down
  (await FakeWebSocket.nth(2)).greet();
  await waitFor(() => rt.state === "connected");
  assert.equal(rt.transport, "websocket");
});

test("an id's position is an offset and an epoch: both are kept per channel and sent back as they came", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const news = rt.subscribe("news");
  rt.subscribe("user:alice");
  rt.connect();
  const first = (await fetch.nth(1)).greet();
  first.envelope(envelope("news", "n7", { offset: 7 }), "news:7-k3v9q2zd,user%3Aalice:2-U1");
  first.send("stream-open", { channels: ["news", "user:alice"], offsets: { news: 7, "user:alice": 2 } }, "news:7-k3v9q2zd,user%3Aalice:2-U1");
  await waitFor(() => news.state === "subscribed");
  assert.deepEqual([news.position, news.epoch], [7, "k3v9q2zd"]);
  assert.deepEqual(rt.getSubscription("user:alice").epoch, "U1");
  first.end();
  const second = await fetch.nth(2);
  assert.equal(second.param("lastEventId"), "news:7-k3v9q2zd,user%3Aalice:2-U1");
});

test("a resumption whose epoch is gone is a reset: stream-reset, gap, subscribed, and nothing replayed", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const quotes = rt.subscribe("quotes", { since: 3, epoch: "e1" });
  const events = record(quotes, ["stream-reset", "gap", "subscribed", "message"]);
  const onClient = record(rt, ["stream-reset"]);
  rt.connect();
  const request = await fetch.nth(1);
  assert.equal(request.param("lastEventId"), "quotes:3-e1");
  request.greet();
  request.send("stream-reset", { channels: ["quotes"] }, "quotes:5-e2");
  request.send("stream-open", { channels: ["quotes"], offsets: { quotes: 5 }, epochs: { quotes: "e2" } }, "quotes:5-e2");
  await waitFor(() => events.length === 3);
  assert.deepEqual(events.map(([name]) => name), ["stream-reset", "gap", "subscribed"]);
  assert.deepEqual(events.of("stream-reset"), [{ channel: "quotes", epoch: "e2", position: 5, resumed: true }]);
  assert.deepEqual(onClient.of("stream-reset"), events.of("stream-reset"));
  assert.deepEqual(events.of("subscribed")[0], { channel: "quotes", resumed: true, recovered: false, position: 5, epoch: "e2" });
  assert.deepEqual([quotes.position, quotes.epoch], [5, "e2"]);
});

test("a stream-reset after stream-open is a live reset: the position starts again at 0 of the new epoch", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const news = rt.subscribe("news");
  const events = record(news, ["stream-reset", "gap", "message"]);
  rt.connect();
  const first = (await fetch.nth(1)).greet();
  first.send("stream-open", { channels: ["news"], offsets: { news: 4 }, epochs: { news: "e1" } }, "news:4-e1");
  await waitFor(() => news.state === "subscribed");
  first.send("stream-reset", { channels: ["news"] }, "news:0-e2");
  await waitFor(() => events.length === 1);
  assert.deepEqual(events.of("stream-reset"), [{ channel: "news", epoch: "e2", position: 0, resumed: false }]);
  assert.deepEqual([news.position, news.epoch, news.state], [0, "e2", "subscribed"]);
  first.envelope(envelope("news", "first of e2", { offset: 1 }), "news:1-e2");
  await waitFor(() => events.of("message").length === 1);
  assert.equal(events.of("gap").length, 0);
  first.end();
  assert.equal((await fetch.nth(2)).param("lastEventId"), "news:1-e2");
});

test("server-side channels of an SSE greeting get subscriptions, are not asked for, and resume with the stream", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch, token: fakeJwt("alice", 600) });
  rt.subscribe("news");
  rt.connect();
  const first = (await fetch.nth(1)).greet({ user_id: "alice", channels: ["news", "alerts", "broadcast", "user:alice"], info: { plan: "pro" } });
  await waitFor(() => rt.state === "connected");
  assert.deepEqual(rt.connection.serverChannels, ["alerts"]);
  assert.deepEqual(rt.connection.info, { plan: "pro" });
  const alerts = rt.getSubscription("alerts");
  assert.equal(alerts.serverSide, true);
  const got = record(alerts, ["subscribed", "message"]);
  first.send("stream-open", { channels: ["news", "alerts"], offsets: { news: 0, alerts: 2 } }, "news:0,alerts:2-a1");
  first.envelope(envelope("alerts", "fire", { offset: 3 }), "news:0,alerts:3-a1");
  await waitFor(() => got.of("message").length === 1);
  assert.equal(got.of("subscribed")[0].resumed, false);
  assert.deepEqual([alerts.position, alerts.epoch], [3, "a1"]);
  first.end();
  const second = await fetch.nth(2);
  assert.equal(second.param("channels"), "news", "the server adds its own channels");
  assert.equal(second.param("lastEventId"), "news:0,alerts:3-a1");
  second.greet({ user_id: "alice", channels: ["news", "broadcast", "user:alice"] });
  await waitFor(() => alerts.state === "unsubscribed");
  assert.equal(rt.getSubscription("alerts"), null);
});
