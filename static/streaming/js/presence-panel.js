// Who is on a `presence-*` channel: the server's `presence` answer, refreshed on every join and leave.

const REFRESH_DELAY_MS = 150;

export function isPresenceChannel(channel) {
  return typeof channel === "string" && channel.startsWith("presence-");
}

export class PresencePanel {
  constructor({ select, summary, users, onQuery }) {
    Object.assign(this, { select, summary, users, onQuery });
    this.pending = null;
    select.addEventListener("change", () => this.refresh());
  }

  get channel() {
    return this.select.value;
  }

  /** Offer the presence channels among the subscriptions; keep the selection when it is still there. */
  offer(channels) {
    const current = this.select.value;
    const presence = channels.filter(isPresenceChannel);
    const placeholder = new Option(presence.length ? "choose a channel" : "subscribe to a presence-* channel", "");
    this.select.replaceChildren(placeholder, ...presence.map((channel) => new Option(channel, channel)));
    this.select.value = presence.includes(current) ? current : presence[0] || "";
    if (this.select.value !== current) this.refresh();
  }

  /** Ask the server now (debounced: a burst of joins costs one query). */
  refresh() {
    clearTimeout(this.pending);
    if (!this.channel) return this.show(null);
    this.pending = setTimeout(() => this.onQuery(this.channel), REFRESH_DELAY_MS);
  }

  /** A join/leave envelope arrived on `channel`. */
  changed(channel) {
    if (channel === this.channel) this.refresh();
  }

  /** The server refused the presence query (e.g. no grant for the channel). */
  failed(text) {
    this.summary.textContent = text;
    this.users.replaceChildren();
  }

  /** Render a `presence` reply `{channel, connections, users}`, or nothing (null). */
  show(presence) {
    if (!presence || presence.channel !== this.channel) {
      this.summary.textContent = this.channel ? "Not connected." : "No presence channel.";
      this.users.replaceChildren();
      return;
    }
    const { connections, users } = presence;
    this.summary.textContent = `${plural(connections, "connection")} · ${plural(users.length, "user")}`;
    this.users.replaceChildren(...users.map((user) => Object.assign(document.createElement("li"), { textContent: user })));
  }
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
