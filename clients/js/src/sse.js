// The Server-Sent Events transport: `GET /sse/connect`, read with fetch() as a stream. Receive only.
//
// Not EventSource: an EventSource delivers only the event names a listener was added for, so
// envelopes of a type the page does not know would be lost, and it hides the HTTP status of a
// refusal (401, 403, 503 + Retry-After). The request is the one an EventSource would make:
// credentials and position in the query (`?token=`, `?lastEventId=`), no custom headers, so it
// needs no CORS preflight.

import { EventStreamParser } from "./sse-parser.js";
import { formatEventId, parseEventId, wasReset } from "./positions.js";
import { Transport } from "./transport.js";

export class SseTransport extends Transport {
  /**
   * @param {import("./client.js").RealtimeClient} client
   * @param {string | null} token
   */
  constructor(client, token) {
    super(client, token);
    this.kind = /** @type {const} */ ("sse");
    /** The channels this stream asks for, fixed for its life (the server adds server-side ones). @type {string[]} */
    this.channels = [];
    /** The positions the stream resumes from, by channel. @type {Map<string, {position: unknown, epoch: string | null}>} */
    this.resumed = new Map();
    /** Channels whose history no longer reached back to their position (`stream-reset` before `stream-open`). @type {Set<string>} */
    this.reset = new Set();
    /** `stream-open` came: the replay is over, and a `stream-reset` from now on is a live one. */
    this.opened = false;
    /** @type {{condition?: string, text?: string} | null} */
    this.streamError = null;
    /** @type {AbortController | null} */
    this._abort = null;
  }

  open() {
    super.open();
    const { client } = this;
    const { apiKey, ssePath } = client.options;
    const subscriptions = [...client._subscriptions.values()];
    this.channels = subscriptions.filter((sub) => !sub.serverSide).map((sub) => sub.channel);
    for (const { channel, position, epoch } of subscriptions) if (position != null) this.resumed.set(channel, { position, epoch });
    const query = [];
    if (this.channels.length) query.push(`channels=${this.channels.map(encodeURIComponent).join(",")}`);
    const credential = this.token ? "token" : apiKey ? "api_key" : "";
    if (credential) query.push(`${credential}=${encodeURIComponent(this.token || apiKey || "")}`);
    const lastEventId = formatEventId(subscriptions.map((sub) => [sub.channel, sub.position, sub.epoch]));
    if (lastEventId) query.push(`lastEventId=${encodeURIComponent(lastEventId)}`);
    const url = client._endpoint(ssePath, "http") + (query.length ? `?${query.join("&")}` : "");
    client._trace("out", "GET", credential ? url.replace(/(token|api_key)=[^&]*/, "$1=[redacted]") : url);
    this._abort = new AbortController();
    this._read(url).catch((error) => this._end({ reason: `stream failed: ${error?.message || error}`, local: true }));
  }

  /** @param {string} url */
  async _read(url) {
    const { client } = this;
    const fetchStream = client.options.fetch || globalThis.fetch;
    const response = await fetchStream(url, {
      headers: { Accept: "text/event-stream" },
      signal: this._abort?.signal,
      cache: "no-store",
      credentials: "same-origin",
    });
    const type = response.headers.get("content-type") || "";
    if (!response.ok || !type.startsWith("text/event-stream") || !response.body) {
      const body = await response.json().catch(() => null);
      client._trace("in", String(response.status), JSON.stringify(body));
      const retryAfter = Number(response.headers.get("retry-after")) * 1000 || 0;
      const reason = body?.error ? `HTTP ${response.status} ${body.type}: ${body.error}` : `HTTP ${response.status}`;
      return this._end({ status: response.ok ? 415 : response.status, reason, retryAfter });
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new EventStreamParser((event) => this._event(event));
    for (;;) {
      const { done, value } = await reader.read();
      if (this.ended) return;
      if (done) break;
      this._alive();
      parser.push(decoder.decode(value, { stream: true }));
    }
    const error = this.streamError;
    this._end(error ? { condition: error.condition, reason: `${error.condition}: ${error.text}` } : { reason: "the stream ended" });
  }

  /** @param {import("./sse-parser.js").StreamEvent} event */
  _event({ event, data, id }) {
    if (this.ended) return;
    const { client } = this;
    client._trace("in", event, data, id);
    /** @type {any} */
    let payload = null;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    const positions = parseEventId(id);
    client._positions(positions);
    if (event === "connected") {
      this._greet(payload?.data || {});
    } else if (event === "stream-reset") {
      for (const channel of payload?.channels || []) {
        const at = positions.get(channel);
        if (this.opened) client._streamReset(channel, at ? at.epoch : null, at ? at.position : 0);
        else this.reset.add(channel);
      }
    } else if (event === "stream-open") {
      this.opened = true;
      for (const channel of payload?.channels || this.channels) {
        const subscription = client._subscriptions.get(channel);
        const since = this.resumed.get(channel);
        if (!subscription) continue;
        const recovered = Boolean(since) && !this.reset.has(channel);
        const now = { offset: subscription.position, epoch: subscription.epoch, recovered };
        subscription._subscribed(Boolean(since), recovered, wasReset(since?.position, since?.epoch ?? null, now));
      }
    } else if (event === "stream-error") {
      this.streamError = payload;
    } else if (event !== "heartbeat" && payload && typeof payload === "object") {
      client._envelope(payload, false);
    }
  }

  _shut() {
    this._abort?.abort();
    return Promise.resolve();
  }
}
