// Reconnect timing: exponential backoff with jitter, and a visible countdown to the next attempt.

const TICK_MS = 100;

/** Delays that double from `initial` up to `max`, each drawn from the upper half ("equal jitter"). */
export class Backoff {
  constructor({ initial = 1000, max = 30000, factor = 2 } = {}) {
    Object.assign(this, { initial, max, factor });
    this.attempt = 0;
  }

  /** The delay before the next attempt, in ms; each call counts one attempt. */
  next() {
    const ceiling = Math.min(this.max, this.initial * this.factor ** this.attempt);
    this.attempt += 1;
    // Half fixed, half random: clients dropped together spread out, and none retries at once.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Called after a connection succeeded: the next failure starts from `initial` again. */
  reset() {
    this.attempt = 0;
  }
}

/** Runs an action after a delay, reporting the time left every tick: `onTick(msLeft)`, then `onTick(null)`. */
export class Countdown {
  constructor(onTick) {
    this.onTick = onTick;
    this.timer = null;
  }

  get running() {
    return this.timer !== null;
  }

  start(delayMs, action) {
    this.cancel();
    this.action = action;
    this.deadline = performance.now() + delayMs;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.tick();
  }

  tick() {
    const left = this.deadline - performance.now();
    if (left <= 0) this.fireNow();
    else this.onTick(left);
  }

  /** Skip the rest of the wait. */
  fireNow() {
    const action = this.action;
    this.cancel();
    if (action) action();
  }

  cancel() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.action = null;
    this.onTick(null);
  }
}
