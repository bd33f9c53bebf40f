// The WebSocket test page: a RealtimeClient on /ws/connect — subscribe, publish, presence, heartbeats, recovery.

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
import { PageSession } from "./session.js";
import { SubscriptionList } from "./subscriptions.js";
import { ToastStack } from "./toasts.js";

const PING_EVERY_MS = 15000;

class WsTestPage {
  constructor(config) {
    this.config = config;
    this.log = frameLogFromPage();
    this.api = new ApiClient({ log: this.log, apiKeyHeader: config.api_key_header, csrfToken: csrfToken() });
    this.subscriptions = new SubscriptionList(document.getElementById("subscriptions"), {
      onRemove: (channel) => this.unsubscribe(channel),
      onChange: (channels) => this.channelsChanged(channels),
    });
    this.presence = new PresencePanel({
      select: document.getElementById("presence-channel"),
      summary: document.getElementById("presence-summary"),
      users: document.getElementById("presence-users"),
      onQuery: (channel) => this.queryPresence(channel),
    });
    this.session = new PageSession({
      transport: "websocket",
      config,
      log: this.log,
      toasts: new ToastStack(document.getElementById("toasts")),
      subscriptions: this.subscriptions,
      facts: ["connection-id", "connection-user", "round-trip"],
    });
    this.session.on("connected", () => this.startPinging());
    this.session.on("subscribed", (channel) => isPresenceChannel(channel) && this.presence.changed(channel));
    this.session.on("lost", () => {
      clearInterval(this.pinger);
      this.presence.show(null);
    });
    this.connectForm = document.getElementById("connect-form");
  }

  get client() {
    return this.session.client;
  }

  bind() {
    const form = (id) => document.getElementById(id);
    watchCredentials(this.connectForm, (credentials) => this.useCredentials(credentials));
    onSubmit(this.connectForm, (values) => this.connect(values));
    form("disconnect").addEventListener("click", () => this.session.disconnect());
    form("ping").addEventListener("click", () => this.ping());
    onSubmit(form("subscribe-form"), (values, subscribeForm) => this.subscribe(values.channel.trim(), subscribeForm));
    onSubmit(form("publish-form"), (values, publishForm) => this.publish(values, publishForm));
    onSubmit(form("send-user-form"), (values, userForm) => this.sendToUser(values, userForm));
    onSubmit(form("presence-form"), () => this.presence.refresh());
    bindNotificationForm(form("notification-form"), { api: this.api, path: this.config.api.notification });
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${this.config.endpoint}`;
    setText("endpoint-url", url);
    this.log.info(`ready: endpoint ${url}, heartbeat every ${this.config.heartbeat_interval} s`);
  }

  useCredentials(credentials) {
    this.api.setCredentials(credentials);
    this.log.addSecrets(credentials.token, credentials.apiKey);
  }

  connect(values) {
    const credentials = credentialsFrom(values);
    this.useCredentials(credentials);
    const client = this.session.connect(credentials, { autoReconnect: values.auto_reconnect });
    client.on("presence", (envelope) => isPresenceChannel(envelope.channel) && this.presence.changed(envelope.channel));
  }

  startPinging() {
    clearInterval(this.pinger);
    this.ping();
    this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  async ping() {
    try {
      const ms = await this.client.ping();
      setText("round-trip", `${ms.toFixed(1)} ms at ${clockTime()}`);
    } catch (error) {
      this.log.problem("ping", error?.message || "not connected");
    }
  }

  // -- subscriptions ----------------------------------------------------------------------

  subscribe(channel, form) {
    if (!isChannelName(channel)) {
      report(form, "A channel is 1-100 of A-Z a-z 0-9 _ . : @ - and starts with a letter or digit.", "error");
      return;
    }
    report(form, this.subscriptions.add(channel) ? "" : `Already in the list: ${channel}.`);
    form.reset();
    this.session.subscribe(channel);
  }

  unsubscribe(channel) {
    this.subscriptions.remove(channel);
    this.session.unsubscribe(channel);
  }

  channelsChanged(channels) {
    offerChannels(document.getElementById("channel-options"), channels);
    this.presence.offer(channels);
  }

  async queryPresence(channel) {
    if (this.client?.state !== "connected") return this.presence.show(null);
    try {
      this.presence.show(await this.client.presence(channel));
    } catch (error) {
      this.presence.failed(`${error.code}: ${error.message}`);
    }
  }

  // -- publishing -------------------------------------------------------------------------

  publish(values, form) {
    const type = values.type.trim() || undefined;
    const sending = this.client?.publish(values.channel.trim(), parseContent(values.content), { type, persist: values.persist });
    this.reply(form, sending);
  }

  sendToUser(values, form) {
    const type = values.type.trim() || undefined;
    this.reply(form, this.client?.sendToUser(values.user_id.trim(), parseContent(values.content), { type }));
  }

  async reply(form, sending) {
    if (!sending) return report(form, "Not connected.", "error");
    report(form, "sending…");
    try {
      report(form, describeAck(await sending), "ok");
    } catch (error) {
      report(form, `${error.code}: ${error.message}`, "error");
    }
  }
}

new WsTestPage(readPageConfig()).bind();
