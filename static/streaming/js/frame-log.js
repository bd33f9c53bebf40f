// The log of every frame in and out, with timestamps: bounded, filterable, and never showing a secret.

const MAX_ENTRIES = 1000;
// Longer frames are cut in the log (a 900 KB message would freeze the page); their size is shown.
export const SHOWN_CHARS = 2000;
const REDACTED = "[redacted]";
// Frames hidden by the "heartbeats" switch: they arrive every few seconds and bury the rest.
const QUIET_LABELS = new Set(["heartbeat", "ping", "pong"]);
const DIRECTIONS = {
  in: { glyph: "↓", title: "received" },
  out: { glyph: "↑", title: "sent" },
  http: { glyph: "⇄", title: "HTTP API" },
  info: { glyph: "•", title: "page" },
  error: { glyph: "!", title: "problem" },
};

export function clockTime(date = new Date()) {
  const pad = (value, width = 2) => String(value).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export class FrameLog {
  constructor({ list, filter, showQuiet, clear }) {
    this.list = list;
    this.filterInput = filter;
    this.secrets = new Set();
    filter.addEventListener("input", () => this.applyFilter());
    showQuiet.addEventListener("change", () => list.classList.toggle("hide-quiet", !showQuiet.checked));
    clear.addEventListener("click", () => list.replaceChildren());
  }

  /** Credentials the page has held: any occurrence in a logged line is replaced by a marker, for good. */
  addSecrets(...secrets) {
    for (const secret of secrets) {
      if (typeof secret === "string" && secret.length >= 4) this.secrets.add(secret);
    }
  }

  received(label, payload) {
    this.add("in", label, payload);
  }

  sent(label, payload) {
    this.add("out", label, payload);
  }

  http(label, payload) {
    this.add("http", label, payload);
  }

  info(text) {
    this.add("info", "page", text);
  }

  problem(label, payload) {
    this.add("error", label, payload);
  }

  add(direction, label, payload) {
    const entry = this.render(direction, label, payload);
    const pinned = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(entry);
    while (this.list.childElementCount > MAX_ENTRIES) this.list.firstElementChild.remove();
    this.matchFilter(entry);
    if (pinned) this.list.scrollTop = this.list.scrollHeight;
  }

  render(direction, label, payload) {
    const kind = DIRECTIONS[direction];
    const entry = document.createElement("li");
    entry.className = `log-entry log-${direction}`;
    if (QUIET_LABELS.has(label)) entry.classList.add("log-quiet");
    const time = document.createElement("time");
    time.dateTime = new Date().toISOString();
    time.textContent = clockTime();
    const arrow = Object.assign(document.createElement("span"), { className: "log-dir", textContent: kind.glyph });
    arrow.title = kind.title;
    const name = Object.assign(document.createElement("span"), { className: "log-label", textContent: label });
    name.title = label;
    const body = Object.assign(document.createElement("code"), { className: "log-body" });
    const text = this.redact(typeof payload === "string" ? payload : JSON.stringify(payload));
    entry.append(time, arrow, name, body);
    if (text.length <= SHOWN_CHARS) {
      body.textContent = text;
      return entry;
    }
    body.textContent = `${text.slice(0, SHOWN_CHARS)}…`;
    const size = new TextEncoder().encode(text).length;
    const more = Object.assign(document.createElement("button"), { type: "button", className: "log-more button-small" });
    more.textContent = `${formatBytes(size)} in all: show`;
    more.title = `${size.toLocaleString("en")} bytes; the log shows the first ${SHOWN_CHARS} characters`;
    more.addEventListener("click", () => {
      body.textContent = text;
      more.remove();
    });
    entry.append(more);
    return entry;
  }

  redact(text) {
    let clean = text ?? "";
    for (const secret of this.secrets) clean = clean.replaceAll(secret, REDACTED);
    return clean;
  }

  applyFilter() {
    for (const entry of this.list.children) this.matchFilter(entry);
  }

  matchFilter(entry) {
    const needle = this.filterInput.value.trim().toLowerCase();
    entry.classList.toggle("is-filtered", needle !== "" && !entry.textContent.toLowerCase().includes(needle));
  }
}

/** 931.2 KB, 12.0 MB, 840 bytes. */
export function formatBytes(size) {
  if (size < 1024) return `${size} bytes`;
  return size < 1024 * 1024 ? `${(size / 1024).toFixed(1)} KB` : `${(size / 1024 / 1024).toFixed(1)} MB`;
}

export function frameLogFromPage() {
  return new FrameLog({
    list: document.getElementById("frame-log"),
    filter: document.getElementById("log-filter"),
    showQuiet: document.getElementById("log-show-quiet"),
    clear: document.getElementById("log-clear"),
  });
}
