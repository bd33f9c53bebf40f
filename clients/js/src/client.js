// The browser client of realtime_project: one envelope over WebSocket or Server-Sent Events, with
// reconnection, resubscription, recovery from the last position per channel, and duplicate
// suppression. No dependencies and no build step: `import { RealtimeClient } from "…/client.js"`.

import { Backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ConnectionError, FatalError, RealtimeError, ReplyError } from "./errors.js";
import { positionAfterSubscribe, wasReset } from "./positions.js";
import { RecentIds } from "./recent-ids.js";
import { SseTransport } from "./sse.js";
import { LIFECYCLE_EVENTS, Subscription } from "./subscription.js";
import { refreshDelay, tokenExpiry } from "./token.js";
import { WebSocketTransport } from "./websocket.js";

export { Backoff, ConnectionError, FatalError, RealtimeError, ReplyError, Subscription };

const CHANNEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$/;
// Subscribe failures worth another try on the same connection: the server was briefly unable.
const RETRY_SUBSCRIBE = new Set(["unavailable", "rate_limited", "internal_error", "timeout"]);

/**
 * @typedef {"disconnected" | "connecting" | "connected"} ClientState
 * @typedef {"websocket" | "sse"} TransportName
 *
 * The protocol, as the server's AsyncAPI document (`/api/asyncapi/`) describes it; a test compares
 * these with the document.
 * @typedef {"ping" | "pong" | "subscribe" | "unsubscribe" | "send_to_channel" | "send_to_user" | "message"
 *   | "history" | "presence" | "snapshot" | "refresh"} ClientAction the action of a client frame
 * @typedef {"connected" | "heartbeat" | "stream-reset" | "error" | "pong" | "subscribed" | "unsubscribed"
 *   | "ack" | "history" | "presence" | "snapshot" | "refreshed"} ServerFrameType the `type` of a WebSocket
 *   frame from the server other than an envelope (an envelope's `type` is its message type)
 * @typedef {"connected" | "stream-open" | "stream-reset" | "stream-error" | "heartbeat"} StreamEventName an
 *   SSE event other than an envelope (an envelope's event name is its `type`)
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] the server's base URL (`location.origin` when omitted)
 * @property {string | null} [token] a JWT; sent as the WebSocket subprotocol pair, or `?token=` on SSE
 * @property {(() => string | null | Promise<string | null>) | null} [getToken] returns a current JWT:
 *   called when there is none, before it expires (then sent with the `refresh` action), and when the
 *   server refused the last one
 * @property {string | null} [apiKey] an API key (a server credential: for tools, not public pages)
 * @property {"auto" | TransportName} [transport] `auto`: WebSocket, falling back to SSE when the
 *   WebSocket handshake is refused or blocked
 * @property {string} [wsPath]
 * @property {string} [ssePath]
 * @property {string} [apiPath] the HTTP API's prefix, for snapshots over HTTP (`/api`)
 * @property {boolean} [autoReconnect] reconnect when a connection drops (default true)
 * @property {number | null} [maxReconnectAttempts] failed attempts in a row before giving up (null: never)
 * @property {number} [reconnectInterval] ms, the backoff's first ceiling (1000)
 * @property {number} [maxReconnectDelay] ms, the longest wait between attempts (10000)
 * @property {number} [stableAfter] ms a connection must last for the backoff to start over (10000)
 * @property {number} [openTimeout] ms to connect and be greeted (10000)
 * @property {number} [requestTimeout] ms to wait for a reply, or for a connection to send it on (10000)
 * @property {number} [tokenRefreshMargin] ms before expiry to refresh the token (30000)
 * @property {number} [dedupSize] envelope ids remembered to drop duplicates (1024)
 * @property {() => number} [random] the backoff's source of jitter
 * @property {any} [WebSocket] the WebSocket class (default: the global one)
 * @property {typeof fetch} [fetch] the fetch function of the SSE transport and of snapshots over HTTP
 *   (default: the global one)
 *
 * @typedef {object} ConnectedContext
 * @property {TransportName} transport
 * @property {string} connectionId
 * @property {string | null} userId
 * @property {number} heartbeatInterval seconds
 * @property {string[] | undefined} channels the server-side channels the server joined at connect
 *   (WebSocket); every channel of the stream (SSE)
 * @property {string[]} serverChannels the server-side channels: each has a subscription (`serverSide`)
 * @property {Record<string, string>} refused server-side channels the server refused, with the reason
 * @property {any} info what the server's connect hook attached to the connection
 * @property {boolean} reconnected
 *
 * @typedef {{attempt: number, delay: number, reason: string, code?: number, status?: number}} ConnectingContext
 * @typedef {{reason: string, reconnecting: boolean, code?: number, status?: number, error: Error | null}} DisconnectedContext
 * @typedef {{direction: "in" | "out", label: string, text: string, id?: string | null}} TraceContext
 * @typedef {{id: string, type: string, channel: string | null, content: any,
 *   sender: {user_id: string | null, connection_id: string} | null, timestamp: string, offset: number | null}} Envelope
 * @typedef {import("./subscription.js").ResetContext} ResetContext
 * @typedef {import("./transport.js").Failure} Failure
 * @typedef {import("./transport.js").Transport} AnyTransport
 */

const DEFAULTS = {
  transport: /** @type {"auto" | TransportName} */ ("auto"),
  wsPath: "/ws/connect",
  ssePath: "/sse/connect",
  apiPath: "/api",
  autoReconnect: true,
  maxReconnectAttempts: /** @type {number | null} */ (null),
  reconnectInterval: 1000,
  maxReconnectDelay: 10000,
  stableAfter: 10000,
  openTimeout: 10000,
  requestTimeout: 10000,
  tokenRefreshMargin: 30000,
  dedupSize: 1024,
  random: Math.random,
};

/** Throws `invalid_channel` for a name the server would refuse. @param {unknown} channel */
function checkChannel(channel) {
  if (typeof channel !== "string" || !CHANNEL_RE.test(channel)) {
    throw new RealtimeError("invalid_channel", `not a channel name: ${JSON.stringify(channel)}`);
  }
}

/** A settled-later promise; its rejection counts as handled, so an unawaited connect() stays quiet. */
function deferred() {
  /** @type {{promise: Promise<void>, resolve: () => void, reject: (error: Error) => void}} */
  const parts = /** @type {any} */ ({});
  parts.promise = new Promise((resolve, reject) => Object.assign(parts, { resolve, reject }));
  parts.promise.catch(() => {});
  return parts;
}

export class RealtimeClient extends Emitter {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    const config = { ...DEFAULTS, ...options };
    /** @type {typeof DEFAULTS & ClientOptions} */
    this.options = config;
    /** @type {ClientState} */
    this.state = "disconnected";
    /** The transport of the current connection. @type {TransportName | null} */
    this.transport = null;
    /** The server's greeting of the current (or last) connection. @type {ConnectedContext | null} */
    this.connection = null;
    /** Why the client stopped, when a refusal or giving up stopped it. @type {Error | null} */
    this.error = null;
    /** @type {Map<string, Subscription>} */
    this._subscriptions = new Map();
    /** @type {Map<string, {resolve: (content: any) => void, reject: (error: Error) => void, timer: any}>} */
    this._pending = new Map();
    /** @type {Set<{resolve: () => void, reject: (error: Error) => void}>} */
    this._waiting = new Set();
    this._recent = new RecentIds(config.dedupSize);
    this._backoff = new Backoff(config.reconnectInterval, config.maxReconnectDelay, config.random);
    this._token = config.token || null;
    this._tokenStale = false;
    this._tokenFresh = false;
    this._requestId = 0;
    this._failures = 0;
    this._greetings = 0;
    this._generation = 0;
    this._useSse = config.transport === "sse";
    this._wsWorked = false;
    this._reopening = false;
    /** @type {AnyTransport | null} */
    this._t = null;
    /** @type {ReturnType<typeof deferred> | null} */
    this._connecting = null;
    /** @type {any} */
    this._retry = undefined;
    /** @type {any} */
    this._stable = undefined;
    /** @type {any} */
    this._refresh = undefined;
  }

  // -- connecting ------------------------------------------------------------------------------

  /**
   * Connect, and stay connected: resolves once the server greets the client, retrying what can be
   * retried; rejects with a FatalError (refused credentials or origin), when attempts run out, or
   * when disconnect() is called first. During a wait between attempts it tries at once.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state === "connected") return Promise.resolve();
    if (this.state === "disconnected") {
      this.error = null;
      this._greetings = this._failures = 0;
      this._backoff.reset();
      this._wsWorked = false;
      this._useSse = this.options.transport === "sse";
      this._setState("connecting");
      this.emit("connecting", { attempt: 0, delay: 0, reason: "connect() was called" });
      this._attempt();
    } else if (this._retry !== undefined) {
      clearTimeout(this._retry);
      this._attempt();
    }
    return /** @type {ReturnType<typeof deferred>} */ (this._connecting).promise;
  }

  /**
   * Close the connection and stop reconnecting. Subscriptions are kept, with their positions: the
   * next connect() resumes them.
   * @returns {Promise<void>}
   */
  disconnect() {
    if (this.state === "disconnected") return Promise.resolve();
    return this._stop(null, { code: 1000, reason: "disconnect() was called" });
  }

  async _attempt() {
    this._retry = undefined;
    const generation = ++this._generation;
    let token;
    try {
      token = await this._credential();
    } catch (error) {
      if (generation !== this._generation) return;
      this.emit("error", { error });
      return this._retryLater(null, { reason: `getToken failed: ${/** @type {Error} */ (error).message}`, local: true });
    }
    if (generation !== this._generation || this.state !== "connecting") return;
    const transport = this._useSse ? new SseTransport(this, token) : new WebSocketTransport(this, token);
    transport.freshToken = this._tokenFresh;
    this._t = transport;
    transport.open();
  }

  /**
   * The token for the next attempt: a new one from getToken when there is none, it was refused, or
   * it has (all but) expired; one that is merely close to expiry is renewed on the connection.
   */
  async _credential() {
    const { getToken } = this.options;
    const expiry = tokenExpiry(this._token);
    this._tokenFresh = false;
    if (getToken && (this._tokenStale || !this._token || (expiry !== null && expiry - Date.now() < 1000))) {
      this._token = (await getToken()) || null;
      this._tokenStale = false;
      this._tokenFresh = true;
    }
    return this._token;
  }

  /**
   * Called by a transport greeted by the server.
   * @param {AnyTransport} transport
   * @param {Record<string, any>} data
   */
  _opened(transport, data) {
    if (transport !== this._t) return;
    if (transport.kind === "websocket") this._wsWorked = true;
    else if (this.options.transport === "auto") this._useSse = true; // SSE worked where WebSocket did not: keep it
    this.transport = transport.kind;
    const serverChannels = this._serverSide(transport, data);
    this.connection = {
      transport: transport.kind,
      connectionId: data.connection_id,
      userId: data.user_id ?? null,
      heartbeatInterval: data.heartbeat_interval,
      channels: data.channels,
      serverChannels,
      refused: data.refused || {},
      info: data.info,
      reconnected: this._greetings++ > 0,
    };
    clearTimeout(this._stable);
    this._stable = setTimeout(() => {
      this._backoff.reset();
      this._failures = 0;
    }, this.options.stableAfter);
    if (transport instanceof WebSocketTransport) {
      for (const subscription of this._subscriptions.values()) {
        // A server-side channel is joined already: only a position to resume from needs a subscribe.
        if (subscription.serverSide && subscription.position == null) subscription._subscribed(false, false);
        else this._subscribeOver(transport, subscription);
      }
    }
    this._scheduleRefresh();
    this._setState("connected");
    this.emit("connected", this.connection);
    for (const waiter of this._waiting) waiter.resolve();
    this._waiting.clear();
  }

  /**
   * The server-side channels of a greeting: each gets a subscription (`serverSide`), and those of
   * the last connection that this one lacks end.
   * @param {AnyTransport} transport
   * @param {Record<string, any>} data
   * @returns {string[]}
   */
  _serverSide(transport, data) {
    const implicit = ["broadcast", `user:${data.user_id}`];
    /** @type {string[]} */
    const channels = (data.channels || []).filter(
      (/** @type {string} */ channel) => !(transport instanceof SseTransport && (transport.channels.includes(channel) || implicit.includes(channel))),
    );
    for (const subscription of [...this._subscriptions.values()]) {
      if (subscription.serverSide && !channels.includes(subscription.channel)) {
        this._subscriptions.delete(subscription.channel);
        subscription._ended(null);
      }
    }
    for (const channel of channels) {
      if (this._subscriptions.has(channel)) continue;
      const subscription = new Subscription(this, channel, null);
      subscription.serverSide = true;
      this._subscriptions.set(channel, subscription);
    }
    return channels;
  }

  /**
   * Called once by a transport that ended on its own: retry, fall back to SSE, or stop.
   * @param {AnyTransport} transport
   * @param {Failure} failure
   */
  _closed(transport, failure) {
    if (transport !== this._t) return;
    this._release(new ConnectionError("connection_lost", `the connection ended: ${failure.reason}`, { closeCode: failure.code }));
    const fatal = this._refusal(transport, failure);
    if (fatal) {
      this._stop(fatal, failure);
      return;
    }
    const auto = this.options.transport === "auto";
    if (!transport.greeted && auto && transport.kind === "websocket" && !this._wsWorked && (failure.code === 1006 || failure.local)) {
      this._trace("in", "fallback", `WebSocket handshake failed (${failure.reason}): trying SSE`);
      this._useSse = true;
      this._attempt();
      return;
    }
    // Neither transport got through yet: the server may simply be down, so start with WebSocket again.
    if (!transport.greeted && auto && transport.kind === "sse" && this._greetings === 0) this._useSse = false;
    if (transport.greeted && this.options.autoReconnect) {
      this.emit("disconnected", { code: failure.code, status: failure.status, reason: failure.reason, reconnecting: true, error: null });
    }
    this._retryLater(transport, failure);
  }

  /**
   * Wait (backoff, or the server's Retry-After) and try again; or stop when that is not wanted.
   * @param {AnyTransport | null} transport
   * @param {Failure} failure
   */
  _retryLater(transport, failure) {
    const { autoReconnect, maxReconnectAttempts } = this.options;
    if (!autoReconnect) {
      const details = { closeCode: failure.code, status: failure.status };
      this._stop(transport?.greeted ? null : new ConnectionError("connect_failed", failure.reason, details), failure);
      return;
    }
    this._failures++;
    if (maxReconnectAttempts != null && this._failures > maxReconnectAttempts) {
      const reason = `gave up after ${maxReconnectAttempts} reconnection attempts: ${failure.reason}`;
      this._stop(new ConnectionError("gave_up", reason, { closeCode: failure.code, status: failure.status }), failure);
      return;
    }
    const delay = Math.max(this._backoff.next(), failure.retryAfter || 0);
    this._setState("connecting");
    /** @type {ConnectingContext} */
    const context = { attempt: this._failures, delay, reason: failure.reason, code: failure.code, status: failure.status };
    this.emit("connecting", context);
    this._retry = setTimeout(() => this._attempt(), delay);
  }

  /**
   * The FatalError a failure amounts to, or null when retrying can help. A refused token is
   * replaced through getToken; only a token fresh from getToken refused at once is final.
   * @param {AnyTransport} transport
   * @param {Failure} failure
   */
  _refusal(transport, { code, status, condition, reason }) {
    const details = { closeCode: code, status };
    if (code === 4401 || status === 401 || condition === "unauthenticated") {
      // A token accepted earlier has expired, or one kept from before was refused: ask for another.
      if (this.options.getToken && (transport.greeted || !transport.freshToken)) {
        this._tokenStale = true;
        return null;
      }
      return new FatalError("unauthenticated", reason, details);
    }
    if (code === 4403 || status === 403) return new FatalError("forbidden", reason, details);
    if (status && status >= 400 && status < 500 && status !== 408 && status !== 429) {
      return new FatalError("refused", reason, details);
    }
    return null;
  }

  /**
   * Stop: no connection, no retries; `error` says why, when it was not disconnect().
   * @param {Error | null} error
   * @param {Failure} failure
   */
  _stop(error, failure) {
    this.error = error;
    const transport = this._t;
    const closing = transport ? transport.close() : Promise.resolve();
    this._release(error || new ConnectionError("disconnected", "disconnect() was called"));
    for (const waiter of this._waiting) waiter.reject(error || new ConnectionError("disconnected", "disconnect() was called"));
    this._waiting.clear();
    this._setState("disconnected");
    /** @type {DisconnectedContext} */
    const context = { code: failure.code, status: failure.status, reason: failure.reason, reconnecting: false, error };
    this.emit("disconnected", context);
    if (error) this.emit("error", { error });
    return closing;
  }

  /**
   * Let go of the current connection: its timers, its requests (rejected with `error`); channels wait to resubscribe.
   * @param {Error} error
   */
  _release(error) {
    this._t = null;
    this.transport = null;
    this._generation++;
    clearTimeout(this._retry);
    clearTimeout(this._stable);
    clearTimeout(this._refresh);
    this._retry = undefined;
    for (const request of this._pending.values()) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this._pending.clear();
    for (const subscription of this._subscriptions.values()) subscription._setState("subscribing");
  }

  /** @param {ClientState} state */
  _setState(state) {
    const previous = this.state;
    if (state === previous) return;
    this.state = state;
    if (state === "connecting") {
      this._connecting ||= deferred();
    } else {
      const waiting = this._connecting;
      this._connecting = null;
      if (state === "connected") waiting?.resolve();
      else waiting?.reject(this.error || new ConnectionError("disconnected", "disconnect() was called"));
    }
    this.emit("state", { state, previous });
  }

  /**
   * An endpoint's URL on the server: `path` on the base URL, with the scheme of `kind`.
   * @param {string} path
   * @param {"ws" | "http"} kind
   */
  _endpoint(path, kind) {
    const url = new URL(path, this.options.url || globalThis.location?.origin);
    const secure = url.protocol === "https:" || url.protocol === "wss:";
    url.protocol = kind === "ws" ? (secure ? "wss:" : "ws:") : secure ? "https:" : "http:";
    return url.href;
  }

  // -- tokens ----------------------------------------------------------------------------------

  _scheduleRefresh() {
    clearTimeout(this._refresh);
    const delay = this.options.getToken ? refreshDelay(this._token, this.options.tokenRefreshMargin) : null;
    if (delay !== null) this._refresh = setTimeout(() => this._refreshToken(), delay);
  }

  /** Replace the token before it expires: the `refresh` action on WebSocket, a reopened stream on SSE. */
  async _refreshToken() {
    const transport = this._t;
    const getToken = this.options.getToken;
    if (!transport || !getToken) return;
    try {
      const token = await getToken();
      if (this._t !== transport || !token) return;
      if (transport instanceof WebSocketTransport) await this._call(transport, "refresh", { token });
      this._token = token;
      if (transport instanceof SseTransport) this._reopenSoon("the token was renewed");
      else this._scheduleRefresh();
    } catch (error) {
      if (this._t !== transport) return;
      this.emit("error", { error });
      this._scheduleRefresh();
    }
  }

  // -- requests (WebSocket) ----------------------------------------------------------------------

  /**
   * Send an action and resolve with its reply's `content`; reject with a ReplyError carrying the
   * server's error code. While (re)connecting it waits for the connection, up to `requestTimeout`.
   * @param {ClientAction} action
   * @param {Record<string, unknown>} [data]
   * @returns {Promise<any>}
   */
  async request(action, data) {
    if (this.state !== "connected") await this._whenConnected();
    const transport = this._t;
    if (!(transport instanceof WebSocketTransport)) {
      throw new ConnectionError("unsupported", `"${action}" needs the WebSocket transport; SSE only receives (publish with the HTTP API)`);
    }
    return this._call(transport, action, data);
  }

  /**
   * @param {WebSocketTransport} transport
   * @param {ClientAction} action
   * @param {Record<string, unknown>} [data]
   * @returns {Promise<any>}
   */
  _call(transport, action, data) {
    return new Promise((resolve, reject) => this._send(transport, action, data, resolve, reject));
  }

  /**
   * Send a frame; `resolve` or `reject` is called with its reply as soon as it is read, before the
   * next frame (a `subscribed` reply must be handled before the history that follows it).
   * @param {WebSocketTransport} transport
   * @param {ClientAction} action
   * @param {Record<string, unknown> | undefined} data
   * @param {(content: any) => void} resolve
   * @param {(error: Error) => void} reject
   */
  _send(transport, action, data, resolve, reject) {
    const timeout = this.options.requestTimeout;
    const id = String(++this._requestId);
    const timer = setTimeout(() => {
      this._pending.delete(id);
      reject(new ConnectionError("timeout", `no reply to "${action}" within ${timeout / 1000} s`));
    }, timeout);
    this._pending.set(id, { resolve, reject, timer });
    transport.send(data === undefined ? { action, request_id: id } : { action, data, request_id: id });
  }

  /** @returns {Promise<void>} */
  _whenConnected() {
    if (this.state === "disconnected") {
      return Promise.reject(new ConnectionError("not_connected", "not connected: call connect() first"));
    }
    const timeout = this.options.requestTimeout;
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => (clearTimeout(timer), resolve()),
        /** @param {Error} error */
        reject: (error) => (clearTimeout(timer), reject(error)),
      };
      const timer = setTimeout(() => {
        this._waiting.delete(waiter);
        reject(new ConnectionError("timeout", `not connected within ${timeout / 1000} s`));
      }, timeout);
      this._waiting.add(waiter);
    });
  }

  /** Called by the WebSocket transport with a reply. @param {{type: ServerFrameType, content: any, request_id?: unknown}} frame */
  _reply(frame) {
    const id = String(frame.request_id);
    const request = this._pending.get(id);
    if (!request) {
      if (frame.type === "error") this.emit("error", { error: new ReplyError(frame.content) });
      return;
    }
    this._pending.delete(id);
    clearTimeout(request.timer);
    if (frame.type === "error") request.reject(new ReplyError(frame.content));
    else request.resolve(frame.content);
  }

  /**
   * Publish to a channel; resolves with the ack `{id, offset?}` (`offset` when persisted).
   * @param {string} channel
   * @param {unknown} content
   * @param {{type?: string, persist?: boolean}} [options]
   * @returns {Promise<{id: string, offset?: number}>}
   */
  publish(channel, content, { type, persist } = {}) {
    return this.request("send_to_channel", { channel, content, type, persist });
  }

  /**
   * Send to every connection of a user, on both transports; resolves with the ack `{id}`.
   * @param {string} userId
   * @param {unknown} content
   * @param {{type?: string}} [options]
   * @returns {Promise<{id: string}>}
   */
  sendToUser(userId, content, { type } = {}) {
    return this.request("send_to_user", { user_id: userId, content, type });
  }

  /**
   * The `message` action: echoed to this user's connections and handed to the server's
   * `client_message` signal; resolves with the ack `{id}`.
   * @param {unknown} content
   * @returns {Promise<{id: string}>}
   */
  send(content) {
    return this.request("message", { content });
  }

  /**
   * A page of a channel's retained history: `{channel, offset, epoch, messages, recovered, has_more}`.
   * With `epoch`, a `since` of another epoch (the history was reset since) is `recovered: false`.
   * @param {string} channel
   * @param {{since?: number, limit?: number, epoch?: string}} [options]
   * @returns {Promise<{channel: string, offset: number, epoch: string, messages: Envelope[], recovered: boolean, has_more: boolean}>}
   */
  history(channel, { since, limit, epoch } = {}) {
    return this.request("history", { channel, since, limit, epoch });
  }

  /**
   * Who is on a channel: `{channel, connections, user_count, users}`; with `countsOnly`, the counts
   * without `users` (also on channels whose presence is off).
   * @param {string} channel
   * @param {{countsOnly?: boolean}} [options]
   * @returns {Promise<{channel: string, connections: number, user_count: number, users?: string[]}>}
   */
  presence(channel, { countsOnly } = {}) {
    return this.request("presence", countsOnly ? { channel, counts_only: true } : { channel });
  }

  /** The round trip of a `ping`, in ms. @returns {Promise<number>} */
  async ping() {
    const started = Date.now();
    await this.request("ping");
    return Date.now() - started;
  }

  // -- snapshots -------------------------------------------------------------------------------

  /**
   * @typedef {{channel: string, offset: number, epoch: string, data: any, has_more: boolean}} Snapshot
   *   a live channel's data (an object, or a page of a list: `has_more`) and the channel's position
   *   (`offset` of the history `epoch`), read in one transaction
   */

  /**
   * A live channel's snapshot: the `snapshot` action on WebSocket; on SSE, or while disconnected,
   * `GET <apiPath>/channels/<name>/snapshot/` with the client's credentials. Rejects with a
   * ReplyError: `forbidden`, `not_found` (no such object, or no live channel), `invalid_channel`.
   * @param {string} channel
   * @returns {Promise<Snapshot>}
   */
  async snapshot(channel) {
    if (this.state === "connecting") await this._whenConnected();
    const transport = this._t;
    if (transport instanceof WebSocketTransport) return this._call(transport, "snapshot", { channel });
    const { apiKey, apiPath, getToken } = this.options;
    const token = this._token || (getToken ? (this._token = (await getToken()) || null) : null);
    const url = this._endpoint(`${apiPath}/channels/${encodeURIComponent(channel)}/snapshot/`, "http");
    const query = token ? `?token=${encodeURIComponent(token)}` : apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : "";
    this._trace("out", "GET", url);
    /** @type {Response} */
    let response;
    try {
      response = await (this.options.fetch || globalThis.fetch)(url + query, { headers: { Accept: "application/json" }, cache: "no-store" });
    } catch (error) {
      throw new ConnectionError("connect_failed", `cannot reach ${url}: ${/** @type {Error} */ (error).message}`);
    }
    const body = await response.json().catch(() => null);
    this._trace("in", String(response.status), JSON.stringify(body));
    if (response.ok && body) return body;
    const error = new ReplyError(body?.type ? body : { type: "unknown_error", error: `HTTP ${response.status}` });
    error.status = response.status;
    throw error;
  }

  /**
   * Take a live channel's snapshot, then follow the channel from its position. Resolves with the
   * snapshot as soon as it is read, before anything later is delivered; from then on the channel's
   * subscription delivers exactly the envelopes published after what the snapshot's `data` shows
   * (no gap, no duplicate), and resumes from there after reconnections. `listeners`
   * (`{message: fn, updated: fn, …}`) are added to the subscription (`getSubscription(channel)`).
   * On a channel subscribed already, its position moves to the snapshot's and its envelopes up to
   * there that arrive afterwards are dropped. Rejects as `snapshot()`, subscribing to nothing.
   * @param {string} channel
   * @param {Record<string, (payload: any) => void>} [listeners]
   * @returns {Promise<Snapshot>}
   */
  async subscribeWithSnapshot(channel, listeners = {}) {
    checkChannel(channel);
    const snapshot = await this.snapshot(channel);
    const { offset, epoch } = snapshot;
    let subscription = this._subscriptions.get(channel);
    if (subscription && offset > 0) {
      if (subscription.epoch !== epoch || !(Number(subscription.position) >= offset)) Object.assign(subscription, { position: offset, epoch });
      subscription._floor = [offset, epoch];
    }
    subscription ||= this.subscribe(channel, { since: offset, epoch });
    for (const [name, listener] of Object.entries(listeners)) subscription.on(name, listener);
    return snapshot;
  }

  // -- subscriptions ---------------------------------------------------------------------------

  /**
   * Subscribe to a channel (or get the subscription there is). It survives reconnections and
   * disconnect()/connect(), resuming each time from the last position seen; `since` starts it
   * after a position of your own (an `offset`, of the history `epoch` when given).
   * @param {string} channel
   * @param {{since?: unknown, epoch?: string}} [options]
   */
  subscribe(channel, { since, epoch } = {}) {
    checkChannel(channel);
    let subscription = this._subscriptions.get(channel);
    if (subscription) return subscription;
    subscription = new Subscription(this, channel, since, epoch);
    this._subscriptions.set(channel, subscription);
    const transport = this._t;
    if (transport instanceof WebSocketTransport && this.state === "connected") this._subscribeOver(transport, subscription);
    else if (transport instanceof SseTransport) this._reopenSoon(`subscribed to ${channel}`);
    return subscription;
  }

  /** @param {string} channel */
  getSubscription(channel) {
    return this._subscriptions.get(channel) || null;
  }

  /** @returns {Subscription[]} */
  subscriptions() {
    return [...this._subscriptions.values()];
  }

  /**
   * @param {WebSocketTransport} transport
   * @param {Subscription} subscription
   */
  _subscribeOver(transport, subscription) {
    const { channel, epoch } = subscription;
    const since = subscription.position;
    const current = () => this._t === transport && this._subscriptions.get(channel) === subscription;
    subscription._setState("subscribing");
    this._send(
      transport,
      "subscribe",
      since == null ? { channel } : epoch ? { channel, since, epoch } : { channel, since },
      (reply) => {
        if (!current()) return;
        subscription.position = positionAfterSubscribe(since, reply);
        subscription.epoch = reply.epoch || null;
        subscription._subscribed(since != null, Boolean(reply.recovered), wasReset(since, epoch, reply));
      },
      /** @param {any} error */
      (error) => {
        if (!current()) return;
        if (RETRY_SUBSCRIBE.has(error.code)) {
          setTimeout(() => current() && this._subscribeOver(transport, subscription), this.options.reconnectInterval);
        } else {
          this._subscriptions.delete(channel);
          subscription._ended(error);
        }
      },
    );
  }

  /**
   * Called by Subscription.unsubscribe().
   * @param {Subscription} subscription
   * @returns {Promise<void>}
   */
  async _unsubscribe(subscription) {
    const { channel } = subscription;
    if (this._subscriptions.get(channel) !== subscription) return;
    this._subscriptions.delete(channel);
    subscription._ended(null);
    const transport = this._t;
    if (transport instanceof SseTransport) this._reopenSoon(`unsubscribed from ${channel}`);
    if (!(transport instanceof WebSocketTransport) || this.state !== "connected") return;
    try {
      await this._call(transport, "unsubscribe", { channel });
    } catch (error) {
      if (error instanceof ReplyError) throw error;
    }
  }

  /**
   * A stream's channels and token are fixed: open a new one (once for several changes in a row),
   * resuming every channel from its position.
   * @param {string} reason
   */
  _reopenSoon(reason) {
    if (this._reopening) return;
    this._reopening = true;
    setTimeout(() => {
      this._reopening = false;
      const transport = this._t;
      if (!(transport instanceof SseTransport)) return;
      transport.close();
      this._release(new ConnectionError("connection_lost", reason));
      this._setState("connecting");
      this.emit("connecting", { attempt: 0, delay: 0, reason });
      this._attempt();
    });
  }

  // -- delivery --------------------------------------------------------------------------------

  /**
   * Called by a transport with each envelope: drop it if seen, note its position, deliver it.
   * @param {Envelope} envelope
   * @param {boolean} positioned its `offset` is the channel's position (WebSocket)
   */
  _envelope(envelope, positioned) {
    if (envelope.id != null && this._recent.seen(envelope.id)) {
      this._trace("in", "duplicate", `dropped a duplicate of ${envelope.id}`);
      return;
    }
    const subscription = envelope.channel == null ? undefined : this._subscriptions.get(envelope.channel);
    const floor = subscription?._floor;
    if (floor && typeof envelope.offset === "number") {
      if (envelope.offset <= floor[0]) return this._trace("in", "duplicate", `dropped ${envelope.id}: in the snapshot`);
      /** @type {Subscription} */ (subscription)._floor = null; // past the snapshot: offsets only grow from here
    }
    if (subscription && positioned && envelope.offset != null) subscription.position = envelope.offset;
    subscription?._deliver(envelope);
    this.emit("message", envelope);
    if (!LIFECYCLE_EVENTS.has(envelope.type)) this.emit(envelope.type, envelope);
  }

  /**
   * Called by the SSE transport with the positions of an event's `id:`.
   * @param {Map<string, {position: unknown, epoch: string | null}>} positions
   */
  _positions(positions) {
    for (const [channel, { position, epoch }] of positions) {
      const subscription = this._subscriptions.get(channel);
      if (subscription) Object.assign(subscription, { position, epoch });
    }
  }

  /**
   * Called by a transport told live that a channel's history was reset: offsets start again.
   * @param {string} channel
   * @param {string | null} epoch
   * @param {unknown} position
   */
  _streamReset(channel, epoch, position) {
    const subscription = this._subscriptions.get(channel);
    if (!subscription) {
      this.emit("stream-reset", /** @type {ResetContext} */ ({ channel, epoch, position, resumed: false }));
      return;
    }
    Object.assign(subscription, { position, epoch });
    subscription._reset(false);
  }

  /**
   * Report a frame in or out to `trace` listeners (credentials are already redacted).
   * @param {"in" | "out"} direction
   * @param {string} label
   * @param {string} text
   * @param {string | null} [id]
   */
  _trace(direction, label, text, id) {
    if (this.listens("trace")) this.emit("trace", { direction, label, text, id });
  }
}
