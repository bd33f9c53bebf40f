// The SSE test page: a RealtimeClient with the SSE transport on /sse/connect; publishing and
// notifications through the HTTP API. Every event type the stream delivers is shown.

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
import { PageSession } from "./session.js";
import { SubscriptionList } from "./subscriptions.js";
import { ToastStack } from "./toasts.js";

class SseTestPage {
  constructor(config) {
    this.config = config;
    this.log = frameLogFromPage();
    this.api = new ApiClient({ log: this.log, apiKeyHeader: config.api_key_header, csrfToken: csrfToken() });
    this.subscriptions = new SubscriptionList(document.getElementById("subscriptions"), {
      onRemove: (channel) => this.unsubscribe(channel),
      onChange: (channels) => offerChannels(document.getElementById("channel-options"), channels),
    });
    this.session = new PageSession({
      transport: "sse",
      config,
      log: this.log,
      toasts: new ToastStack(document.getElementById("toasts")),
      subscriptions: this.subscriptions,
      facts: ["connection-id", "connection-user", "stream-channels"],
    });
    this.session.on("connected", (context) => setText("stream-channels", (context.channels || []).join(", ") || "—"));
    // The stream's position (`id:`), as the server last gave it: what a reconnection resumes from.
    this.session.on("trace", ({ id }) => id && setText("last-event-id", id));
    this.connectForm = document.getElementById("connect-form");
  }

  bind() {
    const form = (id) => document.getElementById(id);
    watchCredentials(this.connectForm, (credentials) => this.useCredentials(credentials));
    onSubmit(this.connectForm, (values) => this.connect(values));
    form("disconnect").addEventListener("click", () => this.session.disconnect());
    onSubmit(form("subscribe-form"), (values, subscribeForm) => this.subscribe(values.channel.trim(), subscribeForm));
    onSubmit(form("publish-form"), (values, publishForm) => this.publish(values, publishForm));
    onSubmit(form("send-user-form"), (values, userForm) => this.sendToUser(values, userForm));
    bindNotificationForm(form("notification-form"), { api: this.api, path: this.config.api.notification });
    setText("endpoint-url", `${location.origin}${this.config.endpoint}`);
    this.log.info(`ready: endpoint ${this.config.endpoint}, heartbeat every ${this.config.heartbeat_interval} s`);
  }

  useCredentials(credentials) {
    this.api.setCredentials(credentials);
    this.log.addSecrets(credentials.token, credentials.apiKey, encodeURIComponent(credentials.apiKey || ""));
  }

  connect(values) {
    const credentials = credentialsFrom(values);
    this.useCredentials(credentials);
    this.session.connect(credentials, { autoReconnect: values.auto_reconnect });
  }

  // -- channels: the library reopens the stream with the new list, resuming --------------------

  subscribe(channel, form) {
    if (!isChannelName(channel)) {
      report(form, "A channel is 1-100 of A-Z a-z 0-9 _ . : @ - and starts with a letter or digit.", "error");
      return;
    }
    const added = this.subscriptions.add(channel);
    report(form, added ? "" : `Already in the list: ${channel}.`);
    form.reset();
    if (added) this.session.subscribe(channel);
  }

  unsubscribe(channel) {
    this.subscriptions.remove(channel);
    this.session.unsubscribe(channel);
  }

  // -- publishing through the HTTP API --------------------------------------------------------

  async publish(values, form) {
    const event = values.type.trim() || "message";
    const body = { channel: values.channel.trim(), event, data: parseContent(values.content), persist: values.persist };
    await this.post(form, this.config.api.sse_send_to_channel, body);
  }

  async sendToUser(values, form) {
    const type = values.type.trim() || "message";
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

new SseTestPage(readPageConfig()).bind();
