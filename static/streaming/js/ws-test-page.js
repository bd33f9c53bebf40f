// The WebSocket test page: one session on /ws/connect — subscribe, publish, presence, heartbeats, recovery.

import { ConnectionStatus, ago } from "./connection-status.js";
import { clockTime, frameLogFromPage } from "./frame-log.js";
import {
  credentialsFrom,
  csrfToken,
  describeAck,
  isChannelName,
  offerChannels,
  onSubmit,
  parseContent,
  readPageConfig,
  report,
  setText,
  watchCredentials,
} from "./forms.js";
import { ApiClient } from "./http-api.js";
import { bindNotificationForm } from "./notification-form.js";
import { PresencePanel, isPresenceChannel } from "./presence-panel.js";
import { Backoff, Countdown } from "./reconnect.js";
import { SubscriptionList } from "./subscriptions.js";
import { ToastStack } from "./toasts.js";

const ACCESS_TOKEN_SUBPROTOCOL = "access_token";
// Refusals that the same credentials from the same page would meet again: retrying cannot help.
const FATAL_CLOSE_CODES = new Set([4401, 4403]);
const CLOSE_MEANINGS = {
  1000: "normal closure",
  1001: "server going away",
  1005: "no status",
  1006: "connection lost",
  1011: "server error",
  1013: "max connections reached",
  4401: "unauthenticated",
  4403: "origin or IP not allowed",
  4408: "idle timeout",
  4409: "closed by an administrator",
  4429: "slow consumer or rate limit",
};
const PING_EVERY_MS = 15000;
const SEEN_IDS_MAX = 5000;
// Server frames by `type`, each handled by the method of that name (envelopes go to `deliver`).
const REPLY_HANDLERS = {
  connected: "onConnected",
  heartbeat: "onHeartbeat",
  pong: "onPong",
  subscribed: "onSubscribed",
  ack: "onAck",
  error: "onError",
  presence: "onPresence",
};

class WsTestPage {
  constructor(config) {
    this.config = config;
    this.url = socketUrl(config.endpoint);
    this.log = frameLogFromPage();
    this.toasts = new ToastStack(document.getElementById("toasts"));
    this.api = new ApiClient({ log: this.log, apiKeyHeader: config.api_key_header, csrfToken: csrfToken() });
    this.status = new ConnectionStatus({ onReconnectNow: () => this.countdown.fireNow() });
    this.backoff = new Backoff();
    this.countdown = new Countdown((msLeft) => this.status.showCountdown(msLeft, this.backoff.attempt));
    this.subscriptions = new SubscriptionList(document.getElementById("subscriptions"), {
      onRemove: (channel) => this.unsubscribe(channel),
      onChange: (channels) => this.channelsChanged(channels),
    });
    this.presence = new PresencePanel({
      select: document.getElementById("presence-channel"),
      summary: document.getElementById("presence-summary"),
      users: document.getElementById("presence-users"),
      onQuery: (channel) => this.send("presence", { channel }),
    });
    this.connectForm = document.getElementById("connect-form");
    this.socket = null;
    this.wanted = false; // the user asked to be connected: failures lead to reconnects
    this.credentials = { token: null, apiKey: null };
    this.requests = new Map(); // request_id -> {action, data, form, sentAt}
    this.sequence = 0;
    this.seen = new Set();
    this.heartbeat = { interval: null, last: null };
  }

  bind() {
    const form = (id) => document.getElementById(id);
    watchCredentials(this.connectForm, (credentials) => this.useCredentials(credentials));
    onSubmit(this.connectForm, (values) => this.connect(values));
    form("disconnect").addEventListener("click", () => this.disconnect());
    form("ping").addEventListener("click", () => this.ping());
    onSubmit(form("subscribe-form"), (values, subscribeForm) => this.subscribe(values.channel.trim(), subscribeForm));
    onSubmit(form("publish-form"), (values, publishForm) => this.publish(values, publishForm));
    onSubmit(form("send-user-form"), (values, userForm) => this.sendToUser(values, userForm));
    onSubmit(form("presence-form"), () => this.presence.refresh());
    bindNotificationForm(form("notification-form"), { api: this.api, path: this.config.api.notification });
    setInterval(() => this.showHeartbeat(), 250);
    setText("endpoint-url", this.url);
    this.log.info(`ready: endpoint ${this.url}, heartbeat every ${this.config.heartbeat_interval} s`);
  }

  useCredentials(credentials) {
    this.api.setCredentials(credentials);
    this.log.addSecrets(credentials.token, credentials.apiKey);
  }

  // -- the connection ---------------------------------------------------------------------

  connect(values) {
    this.credentials = credentialsFrom(values);
    this.useCredentials(this.credentials);
    this.wanted = true;
    this.backoff.reset();
    this.open();
  }

  open() {
    this.countdown.cancel();
    this.drop();
    const { token, apiKey } = this.credentials;
    const url = apiKey ? `${this.url}?api_key=${encodeURIComponent(apiKey)}` : this.url;
    const how = token ? "token as subprotocol" : apiKey ? "API key in ?api_key=" : "anonymous";
    this.log.info(`connecting to ${this.url} (${how})`);
    this.status.set(this.backoff.attempt ? "reconnecting" : "connecting", "");
    let socket;
    try {
      socket = token ? new WebSocket(url, [ACCESS_TOKEN_SUBPROTOCOL, token]) : new WebSocket(url);
    } catch (error) {
      this.wanted = false;
      this.status.set("refused", `cannot open: ${error.message}`);
      return;
    }
    socket.addEventListener("open", () => this.log.info("socket open, waiting for the greeting"));
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event));
    this.socket = socket;
  }

  /** Close the current socket, if any, without reacting to its close event. */
  drop() {
    const socket = this.socket;
    this.socket = null;
    clearInterval(this.pinger);
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "client disconnect");
  }

  disconnect() {
    const hadSocket = this.socket !== null;
    this.wanted = false;
    this.countdown.cancel();
    this.drop();
    if (hadSocket) this.log.sent("close", { code: 1000, reason: "client disconnect" });
    this.connectionLost("disconnected", hadSocket ? "closed by you" : "");
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    const meaning = CLOSE_MEANINGS[event.code];
    const why = `closed ${event.code}${meaning ? ` (${meaning})` : ""}${event.reason ? `: ${event.reason}` : ""}`;
    this.log.add(event.code === 1000 ? "in" : "error", "close", { code: event.code, reason: event.reason });
    if (FATAL_CLOSE_CODES.has(event.code)) {
      this.wanted = false;
      this.connectionLost("refused", `${why}. Not reconnecting: the same credentials would be refused again.`);
    } else if (!this.wanted || !this.connectForm.elements.auto_reconnect.checked) {
      this.wanted = false;
      this.connectionLost("disconnected", why);
    } else {
      this.connectionLost("reconnecting", why);
      this.countdown.start(this.backoff.next(), () => this.open());
    }
  }

  connectionLost(state, detail) {
    clearInterval(this.pinger);
    this.requests.clear();
    this.heartbeat = { interval: null, last: null };
    this.subscriptions.markAll("pending");
    this.presence.show(null);
    for (const id of ["connection-id", "connection-user", "round-trip"]) setText(id, "—");
    this.status.set(state, detail);
  }

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  // -- frames -----------------------------------------------------------------------------

  /** Send `{action, data, request_id}`; the reply (or error) comes back to `form` when given. */
  send(action, data, { form = null, reply = true } = {}) {
    if (!this.isOpen()) {
      if (form) report(form, "Not connected.", "error");
      return null;
    }
    const frame = { action };
    if (data !== undefined) frame.data = data;
    if (reply) {
      frame.request_id = `r${++this.sequence}`;
      this.requests.set(frame.request_id, { action, data, form, sentAt: performance.now() });
    }
    this.log.sent(action, frame);
    this.socket.send(JSON.stringify(frame));
    return frame.request_id;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.log.problem("not JSON", text);
      return;
    }
    if (isEnvelope(frame)) {
      this.deliver(frame);
      return;
    }
    this.log.received(frame.type, frame);
    const request = this.requests.get(frame.request_id) || null;
    this.requests.delete(frame.request_id);
    const handler = REPLY_HANDLERS[frame.type];
    if (handler) this[handler](frame, request);
  }

  onConnected({ data }) {
    const attempts = this.backoff.attempt;
    this.backoff.reset();
    this.status.set("connected", attempts ? `reconnected after ${attempts} attempt${attempts === 1 ? "" : "s"}` : "");
    setText("connection-id", data.connection_id);
    setText("connection-user", data.user_id || "anonymous");
    this.heartbeat = { interval: data.heartbeat_interval, last: null };
    for (const channel of this.subscriptions.names()) this.sendSubscribe(channel);
    this.ping();
    this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  onHeartbeat() {
    this.heartbeat.last = performance.now();
    this.send("pong", undefined, { reply: false });
  }

  ping() {
    this.send("ping");
  }

  onPong(frame, request) {
    if (request) setText("round-trip", `${(performance.now() - request.sentAt).toFixed(1)} ms at ${clockTime()}`);
  }

  showHeartbeat() {
    const { interval, last } = this.heartbeat;
    if (interval === null) return setText("heartbeat-info", "—");
    setText("heartbeat-info", `every ${interval} s · ${last === null ? "none yet" : `last ${ago(last)}`}`);
  }

  onAck({ content }, request) {
    if (request && request.form) report(request.form, describeAck(content), "ok");
  }

  onError({ content }, request) {
    const text = `${content.type}: ${content.error}`;
    if (request && request.action === "subscribe") {
      this.subscriptions.update(request.data.channel, { state: "error", detail: text });
    } else if (request && request.form) {
      report(request.form, text, "error");
    } else if (request && request.action === "presence") {
      this.presence.failed(text);
    } else {
      this.status.detail(text);
    }
  }

  /** Every delivered message: note its offset, drop duplicates, show notifications, follow presence. */
  deliver(envelope) {
    this.log.received(envelope.type, envelope);
    if (this.seen.has(envelope.id)) {
      this.log.info(`dropped a duplicate of ${envelope.id}`);
      return;
    }
    this.seen.add(envelope.id);
    if (this.seen.size > SEEN_IDS_MAX) this.seen.delete(this.seen.values().next().value);
    if (envelope.channel && Number.isInteger(envelope.offset)) {
      this.subscriptions.advance(envelope.channel, envelope.offset);
    }
    if (envelope.type === "notification") this.toasts.show(envelope.content || {});
    if (envelope.type === "presence" && isPresenceChannel(envelope.channel)) this.presence.changed(envelope.channel);
  }

  // -- subscriptions ----------------------------------------------------------------------

  subscribe(channel, form) {
    if (!isChannelName(channel)) {
      report(form, "A channel is 1-100 of A-Z a-z 0-9 _ . : @ - and starts with a letter or digit.", "error");
      return;
    }
    report(form, this.subscriptions.add(channel) ? "" : `Already in the list: ${channel}.`);
    form.reset();
    if (this.isOpen()) this.sendSubscribe(channel);
  }

  /** Subscribe, resuming with `since` when the channel has a known offset. */
  sendSubscribe(channel) {
    const { offset } = this.subscriptions.get(channel);
    this.subscriptions.update(channel, { state: "subscribing", detail: "" });
    this.send("subscribe", offset === null ? { channel } : { channel, since: offset });
  }

  onSubscribed({ content }, request) {
    const { channel, offset: head, recovered } = content;
    const entry = this.subscriptions.get(channel);
    if (!entry) return; // unsubscribed meanwhile
    const resumed = Boolean(request && request.data && request.data.since !== undefined);
    const state = !resumed ? "live" : recovered ? "recovered" : "gap";
    let offset = entry.offset;
    // A channel with no history is at position 0: a later resume from 0 can then say "recovered".
    if (offset === null && head === 0) offset = 0;
    // History was reset below our position: follow the server's numbering from here on.
    if (state === "gap" && offset !== null && head < offset) offset = head;
    this.subscriptions.update(channel, { state, offset });
    if (isPresenceChannel(channel)) this.presence.changed(channel);
  }

  unsubscribe(channel) {
    this.subscriptions.remove(channel);
    this.send("unsubscribe", { channel });
  }

  channelsChanged(channels) {
    offerChannels(document.getElementById("channel-options"), channels);
    this.presence.offer(channels);
  }

  onPresence({ content }) {
    this.presence.show(content);
  }

  // -- publishing -------------------------------------------------------------------------

  publish(values, form) {
    const data = { channel: values.channel.trim(), content: parseContent(values.content), persist: values.persist };
    if (values.type.trim()) data.type = values.type.trim();
    report(form, "sending…");
    this.send("send_to_channel", data, { form });
  }

  sendToUser(values, form) {
    const data = { user_id: values.user_id.trim(), content: parseContent(values.content) };
    if (values.type.trim()) data.type = values.type.trim();
    report(form, "sending…");
    this.send("send_to_user", data, { form });
  }
}

function isEnvelope(frame) {
  return frame !== null && typeof frame === "object" && "id" in frame && "channel" in frame && "timestamp" in frame;
}

function socketUrl(path) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${path}`;
}

new WsTestPage(readPageConfig()).bind();
