// The text/event-stream format (HTML Living Standard, "Server-sent events"), read from chunks.

/**
 * @typedef {{event: string, data: string, id: string | null}} StreamEvent
 * `id` is the event's own `id:` field, or null when it had none.
 */

export class EventStreamParser {
  /** @param {(event: StreamEvent) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this._buffer = "";
    this._afterCR = false;
    this._event = "";
    /** @type {string[]} */
    this._data = [];
    /** @type {string | null} */
    this._id = null;
    /** The last `retry:` the server sent, in ms. @type {number | null} */
    this.retry = null;
  }

  _reset() {
    this._event = "";
    this._data = [];
    this._id = null;
  }

  /** Feed decoded text; complete events are dispatched, a partial line waits for the next chunk. @param {string} text */
  push(text) {
    // A chunk ending in "\r" may be the first half of a "\r\n" split across chunks.
    if (this._afterCR && text.startsWith("\n")) text = text.slice(1);
    this._afterCR = text.endsWith("\r");
    const lines = (this._buffer + text).split(/\r\n|\r|\n/);
    this._buffer = lines.pop() || "";
    for (const line of lines) this._line(line);
  }

  /** @param {string} line */
  _line(line) {
    if (line === "") return this._dispatch();
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this._event = value;
    else if (field === "data") this._data.push(value);
    else if (field === "id" && !value.includes("\0")) this._id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  _dispatch() {
    const event = { event: this._event || "message", data: this._data.join("\n"), id: this._id };
    const empty = this._data.length === 0;
    this._reset();
    if (!empty) this.onEvent(event);
  }
}
