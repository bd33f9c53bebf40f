// The connection's visible state: a badge, the countdown to the next reconnect, and a detail line.

const TICK_MS = 100;

const STATES = new Set(["disconnected", "connecting", "connected", "reconnecting", "refused"]);

export class ConnectionStatus {
  constructor({ onReconnectNow }) {
    this.badge = document.getElementById("connection-state");
    this.countdown = document.getElementById("reconnect-countdown");
    this.nowButton = document.getElementById("reconnect-now");
    this.detailLine = document.getElementById("connection-detail");
    this.nowButton.addEventListener("click", onReconnectNow);
    this.state = "disconnected";
    this.ticker = null;
  }

  set(state, detail) {
    if (!STATES.has(state)) throw new Error(`unknown connection state ${state}`);
    if (state !== "reconnecting") this.stopCountdown();
    this.state = state;
    this.badge.className = `badge state-${state}`;
    this.badge.textContent = state;
    if (detail !== undefined) this.detail(detail);
  }

  detail(text) {
    this.detailLine.textContent = text;
  }

  /** Count down the `delayMs` the client waits before reconnect attempt `attempt`. */
  startCountdown(delayMs, attempt) {
    this.stopCountdown();
    const deadline = performance.now() + delayMs;
    const tick = () => {
      const left = deadline - performance.now();
      if (left > 0) this.showCountdown(left, attempt);
      else this.stopCountdown();
    };
    this.ticker = setInterval(tick, TICK_MS);
    tick();
  }

  stopCountdown() {
    clearInterval(this.ticker);
    this.ticker = null;
    this.showCountdown(null);
  }

  /** Show the time left before reconnect attempt `attempt`; `msLeft` null hides it. */
  showCountdown(msLeft, attempt) {
    const waiting = msLeft !== null;
    this.countdown.hidden = !waiting;
    this.nowButton.hidden = !waiting;
    if (waiting) this.countdown.textContent = `reconnecting in ${(msLeft / 1000).toFixed(1)} s (attempt ${attempt})`;
  }
}

/** "3 s ago" for a past `performance.now()` reading. */
export function ago(since) {
  const seconds = (performance.now() - since) / 1000;
  return seconds < 10 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds)} s ago`;
}
