// The WebSocket transport: `/ws/connect`, the token as the subprotocol pair `access_token, <jwt>`.

import { Transport } from "./transport.js";

const ACCESS_TOKEN_SUBPROTOCOL = "access_token";
// What each close code means, for a close that comes without a reason.
const CLOSE_REASONS = /** @type {Record<number, string>} */ ({
  1000: "closed normally",
  1001: "the server is going away",
  1006: "the connection was refused or lost",
  1011: "server error",
  1013: "the server is full; try again later",
  4401: "authentication failed or expired",
  4403: "origin or IP address not allowed",
  4408: "closed as idle",
  4409: "closed by an administrator",
  4429: "slow consumer or sustained rate-limit abuse",
});

export class WebSocketTransport extends Transport {

  open() {
    super.open();
    const { client } = this;
    const { apiKey, wsPath } = client.options;
    const url = client._endpoint(wsPath, "ws");
    const query = apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : "";
    client._trace("out", "open", `${url}${query && "?api_key=[redacted]"}${this.token ? " (token as subprotocol)" : ""}`);
    const Socket = client.options.WebSocket || globalThis.WebSocket;
    try {
      this.ws = this.token ? new Socket(url + query, [ACCESS_TOKEN_SUBPROTOCOL, this.token]) : new Socket(url + query);
    } catch (error) {
      setTimeout(() => this._end({ reason: `cannot open ${url}: ${/** @type {Error} */ (error).message}`, local: true }));
      return;
    }
    this.ws.onmessage = (event) => this._message(event.data);
    this.ws.onclose = (event) => {
      client._trace("in", "close", `${event.code} ${event.reason}`);
      this._end({ code: event.code, reason: event.reason || CLOSE_REASONS[event.code] || `closed with ${event.code}` });
    };
  }

  /** @param {Record<string, unknown>} frame */
  send(frame) {
    const text = JSON.stringify(frame);
    this.client._trace("out", String(frame.action), frame.action === "refresh" ? text.replace(/"token":"[^"]*"/, '"token":"[redacted]"') : text);
    this.ws?.send(text);
  }

  /** @param {string} text */
  _message(text) {
    /** @type {any} */
    let frame = null;
    try {
      frame = JSON.parse(text);
    } catch {
      // Not JSON: logged below and otherwise ignored.
    }
    this._alive();
    const { client } = this;
    client._trace("in", frame?.type || "invalid", text);
    if (!frame || typeof frame !== "object") return;
    if (!this.greeted) {
      if (frame.type === "connected") this._greet(frame.data || {});
    } else if (frame.type === "heartbeat") {
      this.send({ action: "pong" });
    } else if (frame.request_id != null || frame.type === "error") {
      client._reply(frame);
    } else if ("id" in frame && "timestamp" in frame) {
      client._envelope(frame, true);
    } else if (frame.type === "stream-reset") {
      const { channel, epoch, offset } = frame.content || {};
      client._streamReset(channel, epoch || null, offset ?? 0);
    }
  }

  _shut() {
    const ws = this.ws;
    if (!ws) return Promise.resolve();
    ws.onmessage = null;
    return new Promise((resolve) => {
      const done = () => resolve(undefined);
      ws.onclose = done;
      setTimeout(done, 1000);
      if (ws.readyState < 2) ws.close(1000, "client disconnect");
      else done();
    });
  }
}
