// The SSE test page: an EventSource on /sse/connect; publishing and notifications through the HTTP API.

import { ConnectionStatus, ago } from "./connection-status.js";
import { frameLogFromPage } from "./frame-log.js";
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
import { ApiClient, describeFailure } from "./http-api.js";
import { bindNotificationForm } from "./notification-form.js";
import { Backoff, Countdown } from "./reconnect.js";
import { SubscriptionList } from "./subscriptions.js";
import { ToastStack } from "./toasts.js";

// Events about the stream itself, each handled by the method of that name; all others are envelopes.
const CONTROL_HANDLERS = {
  connected: "onConnected",
  heartbeat: "onHeartbeat",
  "stream-open": "onStreamOpen",
  "stream-reset": "onStreamReset",
  "stream-error": "onStreamError",
};
// An EventSource hears only the event names it listens for: these, plus whatever the page publishes.
const ENVELOPE_TYPES = ["message", "text", "notification", "presence"];
// Refusals the same request would meet again (SPEC §6): retrying cannot help.
const FATAL_STATUSES = new Set([400, 401, 403]);
const FATAL_CONDITIONS = new Set(["unauthenticated"]);
const SEEN_IDS_MAX = 5000;

class SseTestPage {
  constructor(config) {
    this.config = config;
    this.log = frameLogFromPage();
    this.toasts = new ToastStack(document.getElementById("toasts"));
    this.api = new ApiClient({ log: this.log, apiKeyHeader: config.api_key_header, csrfToken: csrfToken() });
    this.status = new ConnectionStatus({ onReconnectNow: () => this.countdown.fireNow() });
    this.backoff = new Backoff();
    this.countdown = new Countdown((msLeft) => this.status.showCountdown(msLeft, this.backoff.attempt));
    this.subscriptions = new SubscriptionList(document.getElementById("subscriptions"), {
      onRemove: (channel) => this.unsubscribe(channel),
      onChange: (channels) => offerChannels(document.getElementById("channel-options"), channels),
    });
    this.connectForm = document.getElementById("connect-form");
    this.source = null;
    this.wanted = false; // the user asked to be connected: failures lead to reconnects
    this.credentials = { token: null, apiKey: null };
    this.eventTypes = new Set(ENVELOPE_TYPES);
    this.lastEventId = "";
    this.resume = { positions: new Map(), reset: new Set() };
    this.streamError = null;
    this.seen = new Set();
    this.heartbeat = { interval: null, last: null };
  }

  bind() {
    const form = (id) => document.getElementById(id);
    watchCredentials(this.connectForm, (credentials) => this.useCredentials(credentials));
    onSubmit(this.connectForm, (values) => this.connect(values));
    form("disconnect").addEventListener("click", () => this.disconnect());
    onSubmit(form("subscribe-form"), (values, subscribeForm) => this.subscribe(values.channel.trim(), subscribeForm));
    onSubmit(form("publish-form"), (values, publishForm) => this.publish(values, publishForm));
    onSubmit(form("send-user-form"), (values, userForm) => this.sendToUser(values, userForm));
    bindNotificationForm(form("notification-form"), { api: this.api, path: this.config.api.notification });
    setInterval(() => this.showHeartbeat(), 250);
    setText("endpoint-url", `${location.origin}${this.config.endpoint}`);
    this.log.info(`ready: endpoint ${this.config.endpoint}, heartbeat every ${this.config.heartbeat_interval} s`);
  }

  useCredentials(credentials) {
    this.api.setCredentials(credentials);
    this.log.addSecrets(credentials.token, credentials.apiKey, encodeURIComponent(credentials.apiKey || ""));
  }

  // -- the stream -------------------------------------------------------------------------

  connect(values) {
    this.credentials = credentialsFrom(values);
    this.useCredentials(this.credentials);
    for (const type of (values.event_types || "").split(",")) this.listenFor(type.trim());
    this.wanted = true;
    this.backoff.reset();
    this.open();
  }

  /** The stream URL: channels, the credential (EventSource sends no headers) and the resume position.
   * `redacted` gives the same URL for the log: the credential masked, the position left readable. */
  streamUrl({ redacted = false } = {}) {
    const parts = [];
    const channels = this.subscriptions.names();
    if (channels.length) parts.push(`channels=${channels.map(encodeURIComponent).join(",")}`);
    const secret = (value) => (redacted ? "[redacted]" : encodeURIComponent(value));
    if (this.credentials.token) parts.push(`token=${secret(this.credentials.token)}`);
    else if (this.credentials.apiKey) parts.push(`api_key=${secret(this.credentials.apiKey)}`);
    if (this.lastEventId) parts.push(`lastEventId=${redacted ? this.lastEventId : encodeURIComponent(this.lastEventId)}`);
    return this.config.endpoint + (parts.length ? `?${parts.join("&")}` : "");
  }

  open() {
    this.countdown.cancel();
    this.drop();
    this.log.sent("GET", this.streamUrl({ redacted: true }));
    this.status.set(this.backoff.attempt ? "reconnecting" : "connecting", "");
    this.resume = { positions: parsePositions(this.lastEventId), reset: new Set() };
    this.streamError = null;
    this.opened = false;
    const source = new EventSource(this.streamUrl());
    source.addEventListener("open", () => this.onOpen(source));
    source.addEventListener("error", () => this.onFailure(source));
    for (const [type, method] of Object.entries(CONTROL_HANDLERS)) {
      source.addEventListener(type, (event) => this.control(source, method, event));
    }
    for (const type of this.eventTypes) this.listen(source, type);
    this.source = source;
  }

  listen(source, type) {
    source.addEventListener(type, (event) => this.onEnvelope(source, event));
  }

  /** Listen for one more envelope type, on this stream and the next ones. */
  listenFor(type) {
    if (!type || type in CONTROL_HANDLERS || this.eventTypes.has(type)) return;
    this.eventTypes.add(type);
    if (this.source) this.listen(this.source, type);
    this.log.info(`listening for "${type}" events`);
  }

  /** Close the current EventSource, if any (an EventSource would otherwise reconnect by itself). */
  drop() {
    if (this.source) this.source.close();
    this.source = null;
  }

  disconnect() {
    const hadStream = this.source !== null;
    this.wanted = false;
    this.countdown.cancel();
    this.drop();
    if (hadStream) this.log.sent("close", "stream closed by the page");
    this.connectionLost("disconnected", hadStream ? "closed by you" : "");
  }

  /** Reopen at once with the current channel list, resuming from the last event id. */
  reopen(why) {
    if (!this.source) return; // not connected: the next attempt uses the new list anyway
    this.log.info(`${why}: reopening the stream${this.lastEventId ? ` from ${this.lastEventId}` : ""}`);
    this.backoff.reset();
    this.open();
  }

  onOpen(source) {
    if (source !== this.source) return;
    this.opened = true;
    this.log.received("open", "HTTP 200, text/event-stream");
  }

  /** The stream failed or ended: find out whether retrying can help, then count down to the next try. */
  async onFailure(source) {
    if (source !== this.source) return;
    this.drop();
    let why = this.streamError ? `${this.streamError.condition}: ${this.streamError.text}` : "stream ended";
    let fatal = this.streamError !== null && FATAL_CONDITIONS.has(this.streamError.condition);
    let wait = 0;
    if (!this.opened && !fatal) {
      ({ why, fatal, wait } = await this.diagnose());
      if (this.source !== null || !this.wanted) return; // the user acted meanwhile
    }
    this.log.add("error", "closed", why);
    if (fatal) {
      this.wanted = false;
      this.connectionLost("refused", `${why}. Not reconnecting: the same request would be refused again.`);
    } else if (!this.wanted || !this.connectForm.elements.auto_reconnect.checked) {
      this.wanted = false;
      this.connectionLost("disconnected", why);
    } else {
      this.connectionLost("reconnecting", why);
      this.countdown.start(Math.max(wait, this.backoff.next()), () => this.open());
    }
  }

  /** An EventSource never shows the HTTP status of a refusal: ask again with fetch to learn it. */
  async diagnose() {
    const controller = new AbortController();
    try {
      const response = await fetch(this.streamUrl(), { signal: controller.signal, headers: { Accept: "text/event-stream" } });
      const body = response.ok ? null : await response.json().catch(() => null);
      controller.abort();
      const why = `HTTP ${response.status}${body && body.error ? ` ${body.type}: ${body.error}` : ""}`;
      this.log.add(response.ok ? "in" : "error", `${response.status}`, body || why);
      const retryAfter = Number(response.headers.get("Retry-After")) || 0;
      return { why, fatal: FATAL_STATUSES.has(response.status), wait: retryAfter * 1000 };
    } catch {
      return { why: "server unreachable", fatal: false, wait: 0 };
    }
  }

  connectionLost(state, detail) {
    this.heartbeat = { interval: null, last: null };
    this.subscriptions.markAll("pending");
    for (const id of ["connection-id", "connection-user", "stream-channels"]) setText(id, "—");
    this.status.set(state, detail);
  }

  // -- events -----------------------------------------------------------------------------

  /** Parse and log an event's JSON data; null (and a log line) when it is not JSON. */
  read(event) {
    this.noteEventId(event);
    try {
      const data = JSON.parse(event.data);
      this.log.received(event.type, data);
      return data;
    } catch {
      this.log.problem(event.type, event.data);
      return null;
    }
  }

  noteEventId(event) {
    // EventSource repeats the last id on events without one: only a change is news.
    if (!event.lastEventId || event.lastEventId === this.lastEventId) return;
    this.lastEventId = event.lastEventId;
    setText("last-event-id", this.lastEventId);
    for (const [channel, offset] of parsePositions(this.lastEventId)) this.subscriptions.advance(channel, offset);
  }

  control(source, method, event) {
    if (source !== this.source) return;
    const data = this.read(event);
    if (data !== null) this[method](data);
  }

  onConnected({ data }) {
    const attempts = this.backoff.attempt;
    this.backoff.reset();
    this.status.set("connected", attempts ? `reconnected after ${attempts} attempt${attempts === 1 ? "" : "s"}` : "");
    setText("connection-id", data.connection_id);
    setText("connection-user", data.user_id || "anonymous");
    setText("stream-channels", (data.channels || []).join(", ") || "—");
    this.heartbeat = { interval: data.heartbeat_interval, last: null };
    this.markResumed();
  }

  /** Each channel: resumed from a known position ("recovered" unless reset), or new ("live"). */
  markResumed() {
    for (const channel of this.subscriptions.names()) {
      const resumed = this.resume.positions.has(channel);
      const state = !resumed ? "live" : this.resume.reset.has(channel) ? "gap" : "recovered";
      this.subscriptions.update(channel, { state });
    }
  }

  onStreamOpen({ offsets }) {
    for (const [channel, offset] of Object.entries(offsets || {})) this.subscriptions.advance(channel, offset);
  }

  onStreamReset({ channels }) {
    // History no longer reached back: our position is void; the reset's own id carries the server's.
    const positions = parsePositions(this.lastEventId);
    for (const channel of channels || []) {
      this.resume.reset.add(channel);
      this.subscriptions.update(channel, { state: "gap", offset: positions.get(channel) ?? null });
    }
  }

  onStreamError(error) {
    this.streamError = error;
    this.status.detail(`${error.condition}: ${error.text}`);
  }

  onHeartbeat() {
    this.heartbeat.last = performance.now();
  }

  showHeartbeat() {
    const { interval, last } = this.heartbeat;
    if (interval === null) return setText("heartbeat-info", "—");
    setText("heartbeat-info", `every ${interval} s · ${last === null ? "none yet" : `last ${ago(last)}`}`);
  }

  onEnvelope(source, event) {
    if (source !== this.source) return;
    const envelope = this.read(event);
    if (envelope === null) return;
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
  }

  // -- channels ---------------------------------------------------------------------------

  subscribe(channel, form) {
    if (!isChannelName(channel)) {
      report(form, "A channel is 1-100 of A-Z a-z 0-9 _ . : @ - and starts with a letter or digit.", "error");
      return;
    }
    const added = this.subscriptions.add(channel);
    report(form, added ? "" : `Already in the list: ${channel}.`);
    form.reset();
    if (added) this.reopen(`subscribed to ${channel}`);
  }

  unsubscribe(channel) {
    this.subscriptions.remove(channel);
    this.reopen(`unsubscribed from ${channel}`);
  }

  // -- publishing through the HTTP API --------------------------------------------------------

  async publish(values, form) {
    const event = values.type.trim() || "message";
    this.listenFor(event);
    const body = { channel: values.channel.trim(), event, data: parseContent(values.content), persist: values.persist };
    await this.post(form, this.config.api.sse_send_to_channel, body);
  }

  async sendToUser(values, form) {
    const type = values.type.trim() || "message";
    this.listenFor(type);
    const body = { user_id: values.user_id.trim(), message: { type, content: parseContent(values.content) } };
    await this.post(form, this.config.api.ws_send_to_user, body);
  }

  async post(form, path, body) {
    report(form, "sending…");
    const result = await this.api.post(path, body);
    if (result.ok) report(form, describeAck(result.body), "ok");
    else report(form, describeFailure(result), "error");
  }
}

/** A Last-Event-ID (`channel:offset,…`, channel names percent-quoted) as a Map of channel to offset. */
export function parsePositions(eventId) {
  const positions = new Map();
  for (const part of (eventId || "").split(",")) {
    const colon = part.lastIndexOf(":");
    const offset = Number(part.slice(colon + 1));
    if (colon <= 0 || !Number.isInteger(offset)) continue;
    try {
      positions.set(decodeURIComponent(part.slice(0, colon)), offset);
    } catch {
      // Not percent-encoding we understand: skip the part rather than guess.
    }
  }
  return positions;
}

new SseTestPage(readPageConfig()).bind();
