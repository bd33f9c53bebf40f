// The page's channels: for each its state after the last (re)subscribe and its position (the
// library's: the offset of the last message seen, resumed from after a reconnect).

const STATE_TITLES = {
  pending: "waiting for a connection",
  subscribing: "subscribe sent, waiting for the reply",
  live: "subscribed (new: retained history replayed)",
  recovered: "resumed from the last offset: nothing was missed",
  gap: "history no longer reached back to the last offset: messages were missed",
  error: "the server refused the subscription",
};

export class SubscriptionList {
  constructor(list, { onRemove, onChange }) {
    this.list = list;
    this.onRemove = onRemove;
    this.onChange = onChange;
    this.entries = new Map();
  }

  names() {
    return [...this.entries.keys()];
  }

  get(channel) {
    return this.entries.get(channel);
  }

  has(channel) {
    return this.entries.has(channel);
  }

  /** Add a channel (state `pending`); false when it is already listed. */
  add(channel) {
    if (this.entries.has(channel)) return false;
    this.entries.set(channel, { channel, state: "pending", offset: null, detail: "" });
    this.render(channel);
    this.onChange(this.names());
    return true;
  }

  remove(channel) {
    if (!this.entries.delete(channel)) return;
    this.row(channel)?.remove();
    this.onChange(this.names());
  }

  update(channel, changes) {
    const entry = this.entries.get(channel);
    if (!entry) return;
    Object.assign(entry, changes);
    this.render(channel);
  }

  markAll(state) {
    for (const channel of this.entries.keys()) this.update(channel, { state, detail: "" });
  }

  row(channel) {
    return [...this.list.children].find((item) => item.dataset.channel === channel);
  }

  render(channel) {
    const entry = this.entries.get(channel);
    const row = this.row(channel) || this.createRow(channel);
    row.dataset.state = entry.state;
    const state = row.querySelector(".sub-state");
    state.className = `sub-state sub-${entry.state}`;
    state.textContent = entry.state;
    state.title = STATE_TITLES[entry.state] || "";
    row.querySelector(".sub-offset").textContent = entry.offset === null ? "no offset" : `offset ${entry.offset}`;
    const detail = row.querySelector(".sub-detail");
    detail.textContent = entry.detail;
    detail.hidden = !entry.detail;
  }

  createRow(channel) {
    const row = document.createElement("li");
    row.className = "subscription";
    row.dataset.channel = channel;
    const name = Object.assign(document.createElement("span"), { className: "sub-channel", textContent: channel });
    const offset = Object.assign(document.createElement("span"), { className: "sub-offset" });
    const state = Object.assign(document.createElement("span"), { className: "sub-state" });
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: "Unsubscribe" });
    button.className = "button-small";
    button.setAttribute("aria-label", `Unsubscribe from ${channel}`);
    button.addEventListener("click", () => this.onRemove(channel));
    const detail = Object.assign(document.createElement("span"), { className: "sub-detail", hidden: true });
    row.append(name, offset, state, button, detail);
    this.list.append(row);
    return row;
  }
}
