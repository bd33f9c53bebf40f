// Errors of the client. Every one is a RealtimeError with a `code`; whether the client retries is
// decided by the kind:
//
//   RealtimeError            base; `code` is a string
//   ├── ReplyError           the server answered a request with an error reply: `code` is the server's
//   │                        (`forbidden`, `invalid_channel`, `rate_limited`, …), `fields` its field errors
//   ├── FatalError           the server refused the connection in a way retrying cannot fix; the client
//   │                        stops: `unauthenticated` (4401 / HTTP 401), `forbidden` (4403 / HTTP 403),
//   │                        `refused` (other HTTP 4xx); `closeCode` / `status` say how it was told
//   └── ConnectionError      no reply because of the connection: `connection_lost` (dropped while waiting),
//                            `not_connected`, `disconnected` (disconnect() was called), `timeout`,
//                            `unsupported` (an action the SSE transport cannot carry), `gave_up`

/** The base of every error the client raises or reports. */
export class RealtimeError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{closeCode?: number, status?: number}} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = new.target.name;
    /** @type {string} */
    this.code = code;
    /** The WebSocket close code that ended the connection, when there was one. @type {number | undefined} */
    this.closeCode = details.closeCode;
    /** The HTTP status of a refused SSE stream, when there was one. @type {number | undefined} */
    this.status = details.status;
  }
}

/** The server answered a request with `{"type": "error", "content": {type, error, fields?}}`. */
export class ReplyError extends RealtimeError {
  /** @param {{type?: string, error?: string, fields?: Record<string, unknown>} | null | undefined} content */
  constructor(content) {
    super(content?.type || "unknown_error", content?.error || "The server refused the request.");
    /** Per-field problems of an `invalid_message` reply. @type {Record<string, unknown> | undefined} */
    this.fields = content?.fields;
  }
}

/** The server refused the connection and the same attempt would be refused again: the client stops. */
export class FatalError extends RealtimeError {}

/** A request could not get its reply: the connection is missing, dropped, too slow or of the wrong kind. */
export class ConnectionError extends RealtimeError {}
