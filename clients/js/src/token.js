// When a JWT expires, read from its `exp` claim (not verified: the server does that), and when to
// ask for a fresh one.

const LONGEST_TIMER_MS = 2 ** 31 - 1;
const SOONEST_REFRESH_MS = 1000;

/**
 * The expiry of a JWT in ms since the epoch; null for a token that is not a JWT or has no `exp`.
 * @param {string | null | undefined} token
 */
export function tokenExpiry(token) {
  try {
    const payload = (token || "").split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * How long to wait before refreshing `token`: until `margin` ms before it expires, but at least
 * half its remaining life (a token shorter than the margin is not refreshed in a tight loop); null
 * when the expiry is unknown.
 * @param {string | null | undefined} token
 * @param {number} margin
 * @param {number} [now]
 */
export function refreshDelay(token, margin, now = Date.now()) {
  const expiry = tokenExpiry(token);
  if (expiry === null) return null;
  const left = expiry - now;
  return Math.min(LONGEST_TIMER_MS, Math.max(left - margin, left / 2, SOONEST_REFRESH_MS));
}
