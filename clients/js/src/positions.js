// The one module that knows what a stream position looks like. A channel's position is an offset
// and the epoch of its history (the epoch changes when the history is reset, and offsets start
// again): the `offset` of the last envelope seen with the epoch of the last `subscribed` reply
// (WebSocket `since` + `epoch`), or the channel's part of the SSE `id:` (`offset-epoch`,
// `Last-Event-ID`). Anything this client cannot read is kept as it is and handed back unchanged.

/**
 * A channel's part of an SSE `id:`: `offset-epoch`, or `offset` while the channel has no epoch.
 * @param {string} raw
 * @returns {{position: unknown, epoch: string | null}}
 */
export function parsePosition(raw) {
  const match = /^(\d+)(?:-([A-Za-z0-9]{1,16}))?$/.exec(raw);
  return match ? { position: Number(match[1]), epoch: match[2] || null } : { position: raw, epoch: null };
}

/**
 * The positions an SSE `id:` carries: django-eventstream's `channel:position,…`, channel names
 * percent-encoded, each position `offset-epoch`. Parts this client cannot read are skipped.
 * @param {string | null | undefined} eventId
 * @returns {Map<string, {position: unknown, epoch: string | null}>}
 */
export function parseEventId(eventId) {
  /** @type {Map<string, {position: unknown, epoch: string | null}>} */
  const positions = new Map();
  for (const part of (eventId || "").split(",")) {
    const colon = part.lastIndexOf(":");
    if (colon <= 0) continue;
    try {
      positions.set(decodeURIComponent(part.slice(0, colon)), parsePosition(part.slice(colon + 1)));
    } catch {
      // Not percent-encoding: skip the part rather than guess.
    }
  }
  return positions;
}

/**
 * The SSE `Last-Event-ID` that resumes each channel from its position; "" when there is none.
 * @param {Iterable<[string, unknown, (string | null)?]>} positions channel, position, epoch
 */
export function formatEventId(positions) {
  const parts = [];
  for (const [channel, position, epoch] of positions) {
    if (position !== null && position !== undefined) {
      parts.push(`${encodeURIComponent(channel)}:${position}${epoch ? `-${epoch}` : ""}`);
    }
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

/**
 * Whether a resumption from (`since`, `epoch`) found the channel's history reset: the server's
 * epoch is another (or its head is behind `since`), so no offset of ours counts any more.
 * @param {unknown} since
 * @param {string | null} epoch
 * @param {{offset?: unknown, epoch?: string | null, recovered?: boolean}} reply the `subscribed` reply, or
 *   the position an SSE stream opened at
 */
export function wasReset(since, epoch, reply) {
  if (since === null || since === undefined || reply.recovered) return false;
  return Boolean(epoch && reply.epoch !== epoch) || (typeof since === "number" && Number(reply.offset) < since);
}
