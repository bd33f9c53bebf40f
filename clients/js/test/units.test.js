// The small parts: backoff, positions, the event-stream parser, tokens, duplicate ids.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../src/backoff.js";
import { formatEventId, parseEventId, positionAfterSubscribe, wasReset } from "../src/positions.js";
import { RecentIds } from "../src/recent-ids.js";
import { EventStreamParser } from "../src/sse-parser.js";
import { refreshDelay, tokenExpiry } from "../src/token.js";
import { fakeJwt } from "./fakes.js";

test("backoff ceilings double from the initial delay up to the maximum, and never pass it", () => {
  const backoff = new Backoff(500, 10_000, () => 0.999999);
  const delays = Array.from({ length: 10 }, () => backoff.next());
  assert.deepEqual(delays, [499, 999, 1999, 3999, 7999, 9999, 9999, 9999, 9999, 9999]);
  assert.equal(backoff.attempts, 10);
  assert.equal(backoff.ceiling(1000), 10_000); // no overflow after a long outage
});

test("backoff draws each delay from the whole range below its ceiling, and starts over after reset", () => {
  const draws = [0, 0.5, 0.25];
  const backoff = new Backoff(1000, 8000, () => draws.shift());
  assert.deepEqual([backoff.next(), backoff.next(), backoff.next()], [0, 1000, 1000]);
  backoff.reset();
  backoff.random = () => 0.5;
  assert.equal(backoff.next(), 500);
});

test("backoff with the real random source stays within [0, ceiling] and spreads out", () => {
  const delays = new Set();
  for (let i = 0; i < 200; i++) {
    const delay = new Backoff(1000, 10_000).next();
    assert.ok(delay >= 0 && delay <= 1000, `delay ${delay}`);
    delays.add(delay);
  }
  assert.ok(delays.size > 50, "jitter: clients dropped together come back at different times");
});

const at = (position, epoch = null) => ({ position, epoch });

test("an SSE id is read as an offset and an epoch per channel, percent-decoded, skipping what is not a position", () => {
  const positions = parseEventId("news:7-k3v9q2zd,user%3Aalice:3,garbage,:4,alerts:0-A1");
  assert.deepEqual([...positions], [["news", at(7, "k3v9q2zd")], ["user:alice", at(3)], ["alerts", at(0, "A1")]]);
  assert.equal(parseEventId("").size, 0);
  assert.equal(parseEventId(null).size, 0);
});

test("positions are written back in the server's format, channels without one left out", () => {
  const id = formatEventId([["news", 7, "k3v9q2zd"], ["user:alice", 3], ["fresh", null, "x1"], ["me@x", 1, null]]);
  assert.equal(id, "news:7-k3v9q2zd,user%3Aalice:3,me%40x:1");
  assert.deepEqual([...parseEventId(id)], [["news", at(7, "k3v9q2zd")], ["user:alice", at(3)], ["me@x", at(1)]]);
});

test("positions the client does not understand are kept as they are (opaque)", () => {
  for (const raw of ["e3-17", "17-", "17-epoch-with-dashes", "17-abcdefghijklmnopq"]) {
    assert.deepEqual([...parseEventId(`news:${raw}`)], [["news", at(raw)]], raw);
    const { position, epoch } = parseEventId(`news:${raw}`).get("news");
    assert.equal(formatEventId([["news", position, epoch]]), `news:${raw}`);
  }
});

test("a resumption is a reset when the server's epoch is another, or its head is behind the position", () => {
  assert.equal(wasReset(5, "old", { offset: 2, epoch: "new", recovered: false }), true);
  assert.equal(wasReset(5, "old", { offset: 9, epoch: "new", recovered: false }), true); // new history grew past 5
  assert.equal(wasReset(5, null, { offset: 2, epoch: "new", recovered: false }), true); // no epoch known: the head says it
  assert.equal(wasReset(5, "same", { offset: 9, epoch: "same", recovered: false }), false); // a gap: history trimmed
  assert.equal(wasReset(5, "same", { offset: 9, epoch: "same", recovered: true }), false);
  assert.equal(wasReset(null, "old", { offset: 0, epoch: "new", recovered: false }), false); // not a resumption
  assert.equal(wasReset("opaque", null, { offset: 0, epoch: "", recovered: false }), false);
});

test("after a subscribe reply the head becomes the position only when nothing is to be replayed", () => {
  assert.equal(positionAfterSubscribe(undefined, { offset: 0, recovered: false }), 0); // empty channel
  assert.equal(positionAfterSubscribe(null, { offset: 5, recovered: false }), null); // history 1..5 follows
  assert.equal(positionAfterSubscribe(5, { offset: 5, recovered: true }), 5); // nothing missed
  assert.equal(positionAfterSubscribe(3, { offset: 5, recovered: true }), 3); // 4, 5 follow
  assert.equal(positionAfterSubscribe(3, { offset: 9, recovered: false }), 9); // gap
  assert.equal(positionAfterSubscribe(12, { offset: 2, recovered: false }), 2); // history was reset
});

test("the event-stream parser gives the same events however the bytes are split", () => {
  const stream =
    "retry: 3000\r\n: a comment\r\nevent: connected\r\ndata: {\"a\":1}\r\n\r\n" +
    "id: news:1\nevent: news_update\ndata: line one\ndata: line two\n\n" +
    "data:no space\n\n" +
    "event: heartbeat\n\n" + // no data: not dispatched
    "id: news:2\rdata: {}\r\r";
  const whole = [];
  const parser = new EventStreamParser((event) => whole.push(event));
  parser.push(stream);
  assert.deepEqual(whole, [
    { event: "connected", data: '{"a":1}', id: null },
    { event: "news_update", data: "line one\nline two", id: "news:1" },
    { event: "message", data: "no space", id: null },
    { event: "message", data: "{}", id: "news:2" },
  ]);
  assert.equal(parser.retry, 3000);
  const pieces = [];
  const split = new EventStreamParser((event) => pieces.push(event));
  for (const char of stream) split.push(char);
  assert.deepEqual(pieces, whole);
});

test("a partial event waits for the rest of it", () => {
  const events = [];
  const parser = new EventStreamParser((event) => events.push(event));
  parser.push("event: text\ndata: hal");
  assert.equal(events.length, 0);
  parser.push("f\n\n");
  assert.deepEqual(events, [{ event: "text", data: "half", id: null }]);
});

test("a token's expiry is read from its exp claim; anything else has none", () => {
  const token = fakeJwt("alice", 600);
  const expiry = tokenExpiry(token);
  assert.ok(Math.abs(expiry - (Date.now() + 600_000)) < 2000, `expiry ${expiry}`);
  assert.equal(tokenExpiry("not-a-jwt"), null);
  assert.equal(tokenExpiry(null), null);
  assert.equal(tokenExpiry("a.b.c"), null);
});

test("a token is refreshed a margin before expiry, or at half its remaining life when shorter", () => {
  const now = Date.now();
  const hour = refreshDelay(fakeJwt("a", 3600), 30_000, now);
  assert.ok(Math.abs(hour - 3_570_000) < 2000, `${hour}`);
  const short = refreshDelay(fakeJwt("a", 20), 30_000, now);
  assert.ok(Math.abs(short - 10_000) < 1000, `${short}`);
  assert.equal(refreshDelay(fakeJwt("a", -10), 30_000, now), 1000); // expired: soon, not in a loop
  assert.equal(refreshDelay("opaque", 30_000, now), null);
});

test("recent ids remember the newest ones only", () => {
  const recent = new RecentIds(3);
  assert.deepEqual(["a", "b", "c", "a"].map((id) => recent.seen(id)), [false, false, false, true]);
  recent.seen("d"); // forgets "a"
  assert.equal(recent.seen("a"), false);
  assert.equal(recent.seen("d"), true);
});
