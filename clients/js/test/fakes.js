// Stand-ins for the browser's WebSocket and fetch() streams, driven from the server's side by tests.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `check` until it returns something truthy; fail after `timeout` ms. */
export async function waitFor(check, { timeout = 2000, what = "the condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A JWT-shaped token (unsigned: the client only reads `exp`) for `sub`, expiring in `seconds`. */
export function fakeJwt(sub, seconds) {
  const part = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + seconds;
  return `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp, n: Math.random() })}.signature`;
}

export function greeting(data = {}) {
  return { type: "connected", data: { connection_id: "c1", user_id: null, heartbeat_interval: 30, ...data } };
}

let envelopes = 0;
export function envelope(channel, content, { offset = null, type = "text", id } = {}) {
  envelopes += 1;
  return {
    id: id || `e${envelopes}`,
    type,
    channel,
    content,
    sender: null,
    timestamp: "2026-11-29T10:00:00.000000Z",
    offset,
  };
}

export class FakeWebSocket {
  static instances = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.instances.push(this);
  }

  static latest() {
    return FakeWebSocket.instances.at(-1);
  }

  /** Wait for socket number `count` (1-based) to be opened by the client. */
  static async nth(count) {
    return waitFor(() => FakeWebSocket.instances[count - 1], { what: `WebSocket #${count}` });
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.closedBy = { code, reason };
    setTimeout(() => this._closed(code, reason));
  }

  // -- the server's side ---------------------------------------------------------------------

  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }

  greet(data) {
    this.accept();
    this.push(greeting(data));
  }

  push(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  drop(code = 1006, reason = "") {
    this._closed(code, reason);
  }

  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  frames(action) {
    return this.sent.filter((frame) => frame.action === action);
  }

  async request(action, count = 1) {
    return waitFor(() => this.frames(action)[count - 1], { what: `"${action}" frame #${count}` });
  }

  reply(frame, type, content) {
    this.push({ type, content, request_id: frame.request_id });
  }
}

const encoder = new TextEncoder();

/** One fetch() of the SSE endpoint, answered by the test. */
export class FakeStreamRequest {
  constructor(url, init) {
    this.url = new URL(url);
    this.init = init;
    this.aborted = false;
    this.response = new Promise((resolve, reject) => Object.assign(this, { _resolve: resolve, _reject: reject }));
    init?.signal?.addEventListener("abort", () => {
      this.aborted = true;
      const error = new DOMException("The operation was aborted.", "AbortError");
      this._reject(error);
      try {
        this._controller?.error(error);
      } catch {
        // already closed
      }
    });
  }

  param(name) {
    return this.url.searchParams.get(name);
  }

  /** Answer 200 text/event-stream and keep the stream open. */
  open() {
    const body = new ReadableStream({ start: (controller) => (this._controller = controller) });
    this._resolve(new Response(body, { status: 200, headers: { "content-type": "text/event-stream; charset=utf-8" } }));
    return this;
  }

  write(text) {
    this._controller.enqueue(encoder.encode(text));
  }

  send(event, data, id) {
    this.write(`${id ? `id: ${id}\n` : ""}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  greet(data = {}) {
    this.open();
    this.write("retry: 3000\n");
    const channels = (this.param("channels") || "").split(",").filter(Boolean);
    this.send("connected", greeting({ channels: [...channels, "broadcast"], ...data }));
    return this;
  }

  envelope(env, id) {
    this.send(env.type, env, id);
  }

  end() {
    this._controller.close();
  }

  /** Answer with a JSON body (an HTTP API request, such as a snapshot's). */
  json(body, status = 200) {
    this._resolve(new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));
    return this;
  }

  refuse(status, body = { type: "error", error: "refused" }, headers = {}) {
    this._resolve(new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } }));
  }

  fail() {
    this._reject(new TypeError("Failed to fetch"));
  }
}

/** A fetch() that records each SSE request; `fake.requests[n]` answers it. */
export function fakeFetch() {
  const requests = [];
  const fetch = async (url, init) => {
    const request = new FakeStreamRequest(url, init);
    requests.push(request);
    return request.response;
  };
  fetch.requests = requests;
  fetch.nth = (count, options = {}) => waitFor(() => requests[count - 1], { what: `SSE request #${count}`, ...options });
  return fetch;
}

/** Record every event of `emitter` named in `names`, as [name, payload] pairs. */
export function record(emitter, names) {
  const seen = [];
  for (const name of names) emitter.on(name, (payload) => seen.push([name, payload]));
  seen.of = (name) => seen.filter(([event]) => event === name).map(([, payload]) => payload);
  return seen;
}
