// A test page's live session: one RealtimeClient (the browser library, clients/js) shown through
// the page's widgets — connection state and countdown, channel list, frame log, toasts. The
// reconnection, resubscription, recovery and duplicate handling are the library's, not the page's.

import { FatalError, RealtimeClient } from "../../realtime/client.js";
import { ConnectionStatus, ago } from "./connection-status.js";
import { setText } from "./forms.js";

// Trace labels that are about the client rather than a frame.
const NOTES = new Set(["duplicate", "fallback"]);

export class PageSession {
  /**
   * @param {object} parts
   * @param {"websocket" | "sse"} parts.transport
   * @param {object} parts.config the page config (endpoint, heartbeat interval)
   * @param {import("./frame-log.js").FrameLog} parts.log
   * @param {import("./toasts.js").ToastStack} parts.toasts
   * @param {import("./subscriptions.js").SubscriptionList} parts.subscriptions
   * @param {string[]} parts.facts ids of the facts cleared when the connection ends
   */
  constructor({ transport, config, log, toasts, subscriptions, facts }) {
    Object.assign(this, { transport, config, log, toasts, subscriptions, facts });
    this.client = null;
    this.status = new ConnectionStatus({ onReconnectNow: () => this.client?.connect() });
    this.heartbeat = { interval: null, last: null };
    this.hooks = { connected: [], lost: [], trace: [], subscribed: [] };
    setInterval(() => this.showHeartbeat(), 250);
  }

  /** Call `hook(context)` on `connected`, when the connection is `lost`, for each `trace` event, or
   * when a channel is `subscribed` (with the channel's name). */
  on(name, hook) {
    this.hooks[name].push(hook);
  }

  /** A new client with these credentials; the listed channels carry over with their positions. */
  connect({ token, apiKey }, { autoReconnect }) {
    const previous = this.client;
    const path = this.transport === "sse" ? { ssePath: this.config.endpoint } : { wsPath: this.config.endpoint };
    const client = new RealtimeClient({ url: location.origin, transport: this.transport, token, apiKey, autoReconnect, ...path });
    this.client = client;
    previous?.disconnect();
    this.everConnected = false;
    this.wire(client);
    for (const channel of this.subscriptions.names()) {
      const { offset } = this.subscriptions.get(channel);
      this.track(client.subscribe(channel, offset === null ? {} : { since: offset }));
    }
    client.connect().catch(() => {}); // failures are shown through the client's events
    return client;
  }

  disconnect() {
    if (this.client && this.client.state !== "disconnected") this.log.sent("close", "disconnect() by the page");
    this.client?.disconnect();
  }

  subscribe(channel) {
    if (this.client) this.track(this.client.subscribe(channel));
  }

  unsubscribe(channel) {
    this.client?.getSubscription(channel)?.unsubscribe().catch((error) => this.log.problem("unsubscribe", error.message));
  }

  // -- the client's events, shown ---------------------------------------------------------------

  wire(client) {
    const mine = (handler) => (payload) => client === this.client && handler(payload);
    client.on("trace", mine((trace) => this.trace(trace)));
    client.on("state", mine(({ state }) => this.stateChanged(client, state)));
    client.on("connecting", mine(({ delay, attempt, reason }) => {
      if (delay > 0) this.status.startCountdown(delay, attempt);
      if (attempt > 0) this.status.detail(reason);
    }));
    client.on("connected", mine((context) => this.connected(context)));
    client.on("disconnected", mine((context) => this.disconnected(context)));
    client.on("notification", mine((envelope) => this.toasts.show(envelope.content || {})));
  }

  trace({ direction, label, text, id }) {
    if (NOTES.has(label)) return this.log.info(text);
    if (label === "heartbeat") this.heartbeat.last = performance.now();
    if (label === "close" && !text.startsWith("1000")) return this.log.problem("close", text);
    const shown = label === "GET" ? decodeURIComponent(text) : text;
    if (direction === "in") this.log.received(label, shown);
    else this.log.sent(label, shown);
    for (const hook of this.hooks.trace) hook({ direction, label, text, id });
    this.showPositions();
  }

  stateChanged(client, state) {
    if (state === "connected") return;
    if (state === "connecting") {
      this.status.set(this.everConnected ? "reconnecting" : "connecting");
      this.lost();
    } else {
      this.status.set(client.error instanceof FatalError ? "refused" : "disconnected");
    }
  }

  connected(context) {
    this.everConnected = true;
    this.status.set("connected", context.reconnected ? `reconnected (connection ${context.connectionId.slice(0, 8)})` : "");
    setText("connection-id", context.connectionId);
    setText("connection-user", context.userId || "anonymous");
    this.heartbeat = { interval: context.heartbeatInterval, last: null };
    for (const hook of this.hooks.connected) hook(context);
  }

  disconnected({ code, reason, reconnecting, error }) {
    if (reconnecting) return;
    this.lost();
    const how = code && code !== 1000 ? `closed ${code}: ${reason}` : reason === "disconnect() was called" ? "closed by you" : reason;
    const final = error ? `. Not reconnecting: ${error.code}, the same request would be refused again.` : "";
    this.status.detail(`${how}${final}`);
  }

  lost() {
    this.heartbeat = { interval: null, last: null };
    for (const id of this.facts) setText(id, "—");
    for (const hook of this.hooks.lost) hook();
  }

  showHeartbeat() {
    const { interval, last } = this.heartbeat;
    if (interval === null) return setText("heartbeat-info", "—");
    setText("heartbeat-info", `every ${interval} s · ${last === null ? "none yet" : `last ${ago(last)}`}`);
  }

  // -- subscriptions --------------------------------------------------------------------------

  /** Show a subscription's state and position in the channel list. */
  track(subscription) {
    const { channel } = subscription;
    const show = (changes) => {
      if (this.client?.getSubscription(channel) === subscription) this.subscriptions.update(channel, changes);
    };
    subscription.on("state", ({ state }) => {
      if (state === "subscribing") show({ state: this.client?.state === "connected" ? "subscribing" : "pending", detail: "" });
    });
    subscription.on("subscribed", ({ resumed, recovered }) => {
      show({ state: !resumed ? "live" : recovered ? "recovered" : "gap", offset: subscription.position });
      for (const hook of this.hooks.subscribed) hook(channel);
    });
    subscription.on("error", ({ error }) => {
      this.subscriptions.update(channel, { state: "error", detail: `${error.code}: ${error.message}` });
    });
    subscription.on("message", () => show({ offset: subscription.position }));
    show({ state: "pending" });
  }

  /** Positions move with envelopes and, on SSE, with `stream-open` and `stream-reset` ids. */
  showPositions() {
    for (const subscription of this.client?.subscriptions() || []) {
      const entry = this.subscriptions.get(subscription.channel);
      if (entry && subscription.position !== null && entry.offset !== subscription.position) {
        this.subscriptions.update(subscription.channel, { offset: subscription.position });
      }
    }
  }
}
