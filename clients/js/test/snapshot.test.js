// Snapshots: `snapshot()` and `subscribeWithSnapshot()` over WebSocket (the `snapshot` action) and
// over HTTP (SSE, or a client not connected), against a fake socket and fake fetch() responses.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { ReplyError, RealtimeClient } from "../src/client.js";
import { FakeWebSocket, envelope, fakeFetch, record, sleep, waitFor } from "./fakes.js";

const FAST = { reconnectInterval: 10, maxReconnectDelay: 40, requestTimeout: 500, openTimeout: 500 };
const made = [];

function client(options = {}) {
  const rt = new RealtimeClient({ url: "http://rt.test:8000", transport: "websocket", WebSocket: FakeWebSocket, ...FAST, ...options });
  made.push(rt);
  return rt;
}

async function connected(rt, count = 1) {
  const connecting = rt.connect();
  const socket = await FakeWebSocket.nth(count);
  socket.greet();
  await connecting;
  return socket;
}

const snapshotOf = (channel, offset, epoch = "ep1", data = { title: "as of the snapshot" }) => ({ channel, offset, epoch, data, has_more: false });
const updated = (channel, offset) => envelope(channel, { pk: 5, data: { title: `t${offset}` } }, { offset, type: "updated" });

beforeEach(() => {
  FakeWebSocket.instances.length = 0;
});

afterEach(async () => {
  await Promise.all(made.splice(0).map((rt) => rt.disconnect()));
});

test("snapshot() sends the snapshot action on WebSocket and resolves with its content; an error reply rejects", async () => {
  const rt = client();
  const socket = await connected(rt);
  const taking = rt.snapshot("doc:5");
  const frame = await socket.request("snapshot");
  assert.deepEqual(frame.data, { channel: "doc:5" });
  socket.reply(frame, "snapshot", snapshotOf("doc:5", 3));
  assert.deepEqual(await taking, snapshotOf("doc:5", 3));

  const refused = rt.snapshot("doc:7");
  socket.reply(await socket.request("snapshot", 2), "error", { type: "forbidden", error: "Not allowed to follow this document." });
  await assert.rejects(refused, (error) => error instanceof ReplyError && error.code === "forbidden");
});

test("subscribeWithSnapshot over WebSocket: the snapshot, then a subscribe since its position; later envelopes only", async () => {
  const rt = client();
  const socket = await connected(rt);
  const order = [];
  const taking = rt.subscribeWithSnapshot("doc:5", { updated: (e) => order.push(e.offset) }).then((snapshot) => {
    order.push("snapshot");
    return snapshot;
  });
  const asked = await socket.request("snapshot");
  socket.reply(asked, "snapshot", snapshotOf("doc:5", 3));
  const snapshot = await taking;
  assert.equal(snapshot.offset, 3);
  const subscribe = await socket.request("subscribe");
  assert.deepEqual(subscribe.data, { channel: "doc:5", since: 3, epoch: "ep1" });
  socket.reply(subscribe, "subscribed", { channel: "doc:5", offset: 5, epoch: "ep1", recovered: true });
  socket.push(updated("doc:5", 4));
  socket.push(updated("doc:5", 5));
  await waitFor(() => order.length === 3);
  assert.deepEqual(order, ["snapshot", 4, 5]);
  const subscription = rt.getSubscription("doc:5");
  assert.equal(subscription.state, "subscribed");
  assert.deepEqual([subscription.position, subscription.epoch], [5, "ep1"]);

  socket.drop(1006); // a reconnection resumes from the position reached since the snapshot
  const second = await FakeWebSocket.nth(2);
  second.greet();
  assert.deepEqual((await second.request("subscribe")).data, { channel: "doc:5", since: 5, epoch: "ep1" });
});

test("subscribeWithSnapshot on a channel subscribed already: no second subscribe, envelopes up to the snapshot dropped", async () => {
  const rt = client();
  const socket = await connected(rt);
  const subscription = rt.subscribe("doc:5");
  const first = await socket.request("subscribe");
  socket.reply(first, "subscribed", { channel: "doc:5", offset: 2, epoch: "ep1", recovered: false });
  const got = [];
  const taking = rt.subscribeWithSnapshot("doc:5", { message: (e) => got.push(e.offset) });
  socket.reply(await socket.request("snapshot"), "snapshot", snapshotOf("doc:5", 4));
  await taking;
  assert.deepEqual([subscription.position, subscription.epoch], [4, "ep1"]);
  for (const offset of [3, 4, 5, 6]) socket.push(updated("doc:5", offset)); // 3 and 4 were in flight: the snapshot shows them
  await waitFor(() => got.length === 2);
  await sleep(5);
  assert.deepEqual(got, [5, 6]);
  assert.equal(socket.frames("subscribe").length, 1);
  assert.equal(subscription.position, 6);
});

test("a history reset to another epoch after the snapshot lets the new epoch's offsets through", async () => {
  const rt = client();
  const socket = await connected(rt);
  rt.subscribe("doc:5");
  socket.reply(await socket.request("subscribe"), "subscribed", { channel: "doc:5", offset: 2, epoch: "ep1", recovered: false });
  const taking = rt.subscribeWithSnapshot("doc:5");
  socket.reply(await socket.request("snapshot"), "snapshot", snapshotOf("doc:5", 9));
  await taking;
  const got = record(rt.getSubscription("doc:5"), ["message", "stream-reset"]);
  socket.push({ type: "stream-reset", content: { channel: "doc:5", epoch: "ep2", offset: 0 } });
  socket.push(updated("doc:5", 1));
  await waitFor(() => got.of("message").length === 1);
  assert.equal(got.of("stream-reset")[0].epoch, "ep2");
  assert.deepEqual(got.of("message").map((e) => e.offset), [1]);
});

test("over SSE the snapshot comes from the HTTP API and the stream reopens with the channel at its position", async () => {
  const fetch = fakeFetch();
  const rt = client({ transport: "sse", fetch, token: "jwt-1" });
  rt.subscribe("news");
  const connecting = rt.connect();
  const first = (await fetch.nth(1)).greet();
  await connecting;
  first.envelope(envelope("news", "n7", { offset: 7 }), "news:7-ep0");
  await waitFor(() => rt.getSubscription("news").position === 7);

  const got = [];
  const taking = rt.subscribeWithSnapshot("doc:5", { message: (e) => got.push(e.offset) });
  const asked = await fetch.nth(2);
  assert.equal(asked.url.pathname, "/api/channels/doc%3A5/snapshot/");
  assert.equal(asked.param("token"), "jwt-1");
  asked.json(snapshotOf("doc:5", 3));
  assert.equal((await taking).offset, 3);

  const reopened = await fetch.nth(3);
  assert.equal(first.aborted, true);
  assert.equal(reopened.param("channels"), "news,doc:5");
  assert.equal(reopened.param("lastEventId"), "news:7-ep0,doc%3A5:3-ep1");
  reopened.greet();
  reopened.envelope(updated("doc:5", 4), "news:7-ep0,doc%3A5:4-ep1");
  reopened.send("stream-open", { channels: ["news", "doc:5"] }, "news:7-ep0,doc%3A5:4-ep1");
  await rt.getSubscription("doc:5").ready();
  assert.deepEqual(got, [4]);
  assert.equal(rt.getSubscription("doc:5").recovered, true);
});

test("an HTTP refusal rejects with the server's code and status, and subscribes to nothing", async () => {
  const fetch = fakeFetch();
  const rt = client({ transport: "sse", fetch, apiKey: "k1", apiPath: "/realtime/api" });
  const taking = rt.subscribeWithSnapshot("doc:7");
  const asked = await fetch.nth(1);
  assert.equal(asked.url.pathname, "/realtime/api/channels/doc%3A7/snapshot/");
  assert.equal(asked.param("api_key"), "k1");
  asked.json({ type: "forbidden", error: "Not allowed to follow this document." }, 403);
  await assert.rejects(taking, (error) => error instanceof ReplyError && error.code === "forbidden" && error.status === 403);
  assert.equal(rt.getSubscription("doc:7"), null);
  await assert.rejects(rt.subscribeWithSnapshot("no spaces"), (error) => error.code === "invalid_channel");
});

test("a WebSocket client not connected yet takes the snapshot over HTTP and subscribes since it on connect()", async () => {
  const fetch = fakeFetch();
  const rt = client({ fetch });
  const taking = rt.subscribeWithSnapshot("docs:general");
  (await fetch.nth(1)).json(snapshotOf("docs:general", 12, "ep3", [{ id: 5 }]));
  assert.deepEqual((await taking).data, [{ id: 5 }]);
  const socket = await connected(rt);
  assert.deepEqual((await socket.request("subscribe")).data, { channel: "docs:general", since: 12, epoch: "ep3" });
});
