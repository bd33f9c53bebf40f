// The one module that knows what a stream position looks like. Everywhere else a channel's position
// is an opaque value taken from the server and handed back to it: the `offset` of the last envelope
// seen (WebSocket `since`), or the channel's part of the SSE `id:` (`Last-Event-ID`).

/**
 * The positions an SSE `id:` carries: django-eventstream's `channel:position,…`, channel names
 * percent-encoded. Parts this client cannot read are skipped.
 * @param {string | null | undefined} eventId
 * @returns {Map<string, unknown>}
 */
export function parseEventId(eventId) {
  /** @type {Map<string, unknown>} */
  const positions = new Map();
  for (const part of (eventId || "").split(",")) {
    const colon = part.lastIndexOf(":");
    if (colon <= 0) continue;
    const raw = part.slice(colon + 1);
    try {
      positions.set(decodeURIComponent(part.slice(0, colon)), /^\d+$/.test(raw) ? Number(raw) : raw);
    } catch {
      // Not percent-encoding: skip the part rather than guess.
    }
  }
  return positions;
}

/**
 * The SSE `Last-Event-ID` that resumes each channel from its position; "" when there is none.
 * @param {Iterable<[string, unknown]>} positions
 */
export function formatEventId(positions) {
  const parts = [];
  for (const [channel, position] of positions) {
    if (position !== null && position !== undefined) parts.push(`${encodeURIComponent(channel)}:${position}`);
  }
  return parts.join(",");
}

/**
 * A channel's position after a WebSocket `subscribed` reply `{offset, recovered}` to a subscribe
 * sent with `since`. When nothing is going to be replayed — the channel is where we were, or has no
 * history (`0`), or the history we knew no longer exists — the server's head is the position;
 * otherwise the replayed envelopes that follow move it, one by one.
 * @param {unknown} since
 * @param {{offset?: unknown, recovered?: boolean}} reply
 */
export function positionAfterSubscribe(since, reply) {
  const resumed = since !== null && since !== undefined;
  if (reply.offset === (resumed ? since : 0) || (resumed && !reply.recovered)) return reply.offset;
  return resumed ? since : null;
}
