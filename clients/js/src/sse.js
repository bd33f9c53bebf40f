// The Server-Sent Events transport: `GET /sse/connect`, read with fetch() as a stream. Receive only.
//
// Not EventSource: an EventSource delivers only the event names a listener was added for, so
// envelopes of a type the page does not know would be lost, and it hides the HTTP status of a
// refusal (401, 403, 503 + Retry-After). The request is the one an EventSource would make:
// credentials and position in the query (`?token=`, `?lastEventId=`), no custom headers, so it
// needs no CORS preflight.

import { EventStreamParser } from "./sse-parser.js";
import { formatEventId, parseEventId } from "./positions.js";
import { Transport } from "./transport.js";

export class SseTransport extends Transport {
  /**
   * @param {import("./client.js").RealtimeClient} client
   * @param {string | null} token
   */
  constructor(client, token) {
    super(client, token);
    this.kind = /** @type {const} */ ("sse");
    /** The channels of this stream, fixed for its life. @type {string[]} */
    this.channels = [];
    /** Channels asked to resume from a position. @type {Set<string>} */
    this.resumed = new Set();
    /** Channels whose history no longer reached back to their position (`stream-reset`). @type {Set<string>} */
    this.reset = new Set();
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
    this.channels = subscriptions.map((sub) => sub.channel);
    this.resumed = new Set(subscriptions.filter((sub) => sub.position != null).map((sub) => sub.channel));
    const query = [];
    if (this.channels.length) query.push(`channels=${this.channels.map(encodeURIComponent).join(",")}`);
    const credential = this.token ? "token" : apiKey ? "api_key" : "";
    if (credential) query.push(`${credential}=${encodeURIComponent(this.token || apiKey || "")}`);
    const lastEventId = formatEventId(subscriptions.map((sub) => [sub.channel, sub.position]));
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
    if (id) client._positions(parseEventId(id));
    if (event === "connected") {
      this._greet(payload?.data || {});
    } else if (event === "stream-reset") {
      for (const channel of payload?.channels || []) this.reset.add(channel);
    } else if (event === "stream-open") {
      for (const channel of this.channels) {
        const resumed = this.resumed.has(channel);
        client._subscriptions.get(channel)?._subscribed(resumed, resumed && !this.reset.has(channel));
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
