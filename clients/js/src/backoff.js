// Delays between reconnection attempts: exponential growth, a cap, and full jitter.

export class Backoff {
  /**
   * The delay before attempt n (from 0) is drawn uniformly from [0, min(max, initial × 2ⁿ)] ms, so
   * clients dropped by the same restart do not all come back in the same instant, and none waits
   * longer than `max`.
   * @param {number} initial
   * @param {number} max
   * @param {() => number} [random] a source of numbers in [0, 1)
   */
  constructor(initial, max, random = Math.random) {
    this.initial = initial;
    this.max = Math.max(initial, max);
    this.random = random;
    /** Delays handed out since the last reset. */
    this.attempts = 0;
  }

  /** The largest delay attempt `attempt` can get, in ms. @param {number} attempt */
  ceiling(attempt) {
    return Math.min(this.max, this.initial * 2 ** Math.min(attempt, 30));
  }

  /** The delay before the next attempt, in ms; counts one attempt. */
  next() {
    return Math.floor(this.random() * this.ceiling(this.attempts++));
  }

  /** Start again from `initial` (after a connection proved stable). */
  reset() {
    this.attempts = 0;
  }
}
