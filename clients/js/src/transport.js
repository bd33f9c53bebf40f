// What both transports share: the greeting, the heartbeat watchdog, and ending exactly once.
//
// A transport is one connection attempt. It reports to its client: `_opened(transport, greeting)`
// when the server greets it, `_closed(transport, failure)` once when it ends on its own, and the
// frames or events in between. `close()` ends it quietly, with no report.

/**
 * Why a connection ended: `code` a WebSocket close code, `status` an HTTP status, `condition` an SSE
 * `stream-error` condition, `local` a failure seen here (network, timeout) rather than told by the server.
 * @typedef {{reason: string, code?: number, status?: number, condition?: string,
 *   retryAfter?: number, local?: boolean}} Failure
 */

export class Transport {
  /**
   * @param {import("./client.js").RealtimeClient} client
   * @param {string | null} token
   */
  constructor(client, token) {
    this.client = client;
    this.token = token;
    /** @type {"websocket" | "sse"} */
    this.kind = "websocket";
    /** The token came from getToken for this very attempt (so a refusal of it is final). */
    this.freshToken = false;
    this.greeted = false;
    this.ended = false;
    /** @type {number | null} ms of silence after which the connection counts as dead */
    this._silence = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._watchdog = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._opening = undefined;
  }

  /** Start the greeting timer; subclasses open the connection. */
  open() {
    const limit = this.client.options.openTimeout;
    this._opening = setTimeout(() => this._end({ reason: `no greeting within ${limit / 1000} s`, local: true }), limit);
  }

  /** Something arrived: the connection is alive for another two heartbeat intervals. */
  _alive() {
    clearTimeout(this._watchdog);
    const silence = this._silence;
    if (silence) {
      this._watchdog = setTimeout(
        () => this._end({ reason: `nothing from the server for ${silence / 1000} s (two heartbeats)`, local: true }),
        silence,
      );
    }
  }

  /** @param {Record<string, any>} data the greeting's `data` */
  _greet(data) {
    clearTimeout(this._opening);
    const interval = Number(data.heartbeat_interval) || 0;
    this._silence = interval > 0 ? 2000 * interval : null;
    this.greeted = true;
    this._alive();
    this.client._opened(this, data);
  }

  /** The connection ended on its own: tell the client, once. @param {Failure} failure */
  _end(failure) {
    if (this.ended) return;
    this.close();
    this.client._closed(this, failure);
  }

  /** End the connection without telling the client. @returns {Promise<void>} */
  close() {
    if (this.ended) return Promise.resolve();
    this.ended = true;
    clearTimeout(this._opening);
    clearTimeout(this._watchdog);
    return this._shut();
  }

  /** @returns {Promise<void>} */
  _shut() {
    return Promise.resolve();
  }
}
