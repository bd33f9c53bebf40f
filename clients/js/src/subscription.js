// One channel's subscription: its state, its position, and the envelopes delivered on it.

import { Emitter } from "./emitter.js";
import { ConnectionError } from "./errors.js";

/** Event names of the client and its subscriptions: an envelope of such a `type` reaches `message` only. */
export const LIFECYCLE_EVENTS = new Set([
  "state", "connecting", "connected", "disconnected", "error", "message", "trace",
  "subscribed", "unsubscribed", "gap", "stream-reset",
]); // prettier-ignore

/**
 * @typedef {"subscribing" | "subscribed" | "unsubscribed"} SubscriptionState
 * @typedef {{channel: string, resumed: boolean, recovered: boolean, position: unknown, epoch: string | null}} SubscribedContext
 *   `resumed`: the subscription asked to continue from a position; `recovered`: it did, and nothing
 *   published since was missed.
 * @typedef {{channel: string, position: unknown, epoch: string | null}} GapContext
 * @typedef {{channel: string, epoch: string | null, position: unknown, resumed: boolean}} ResetContext
 *   the channel's history was reset: offsets start again under `epoch`, from `position`; `resumed`:
 *   found on resuming (what was published meanwhile is not replayed), else told live.
 */

export class Subscription extends Emitter {
  /**
   * Made by `client.subscribe()`.
   * @param {import("./client.js").RealtimeClient} client
   * @param {string} channel
   * @param {unknown} since
   * @param {string | null} [epoch]
   */
  constructor(client, channel, since, epoch) {
    super();
    this.client = client;
    this.channel = channel;
    /** @type {SubscriptionState} */
    this.state = "subscribing";
    /** Where the next (re)subscription resumes from: the offset of the last envelope seen. @type {unknown} */
    this.position = since ?? null;
    /** The epoch of `position`: changes when the channel's history is reset. @type {string | null} */
    this.epoch = epoch || null;
    /** Joined by the server at connect (a server-side subscription), not by `subscribe()`. */
    this.serverSide = false;
    /** Whether the last resumption missed nothing; null when it did not resume. @type {boolean | null} */
    this.recovered = null;
    /** Why the server refused the subscription, when it did. @type {Error | null} */
    this.error = null;
    /** A snapshot's (offset, epoch): envelopes up to it that arrive after it are dropped. @type {[number, string] | null} */
    this._floor = null;
  }

  /** Leave the channel; it is not restored after reconnections. */
  unsubscribe() {
    return this.client._unsubscribe(this);
  }

  /**
   * Resolves once subscribed (now, if it is); rejects if the subscription ends first or `timeout` ms pass.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout = this.client.options.requestTimeout) {
    if (this.state === "subscribed") return Promise.resolve();
    if (this.state === "unsubscribed") return Promise.reject(this.error || new ConnectionError("unsubscribed", "unsubscribed"));
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off("state", settle);
      };
      /** @param {{state: SubscriptionState}} change */
      const settle = ({ state }) => {
        if (state === "subscribing") return;
        done();
        if (state === "subscribed") resolve();
        else reject(this.error || new ConnectionError("unsubscribed", `unsubscribed from ${this.channel}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new ConnectionError("timeout", `not subscribed to ${this.channel} within ${timeout / 1000} s`));
      }, timeout);
      this.on("state", settle);
    });
  }

  /** @param {SubscriptionState} state */
  _setState(state) {
    const previous = this.state;
    if (state === previous) return;
    this.state = state;
    this.emit("state", { state, previous });
  }

  /**
   * The server confirmed the subscription; the replayed history follows.
   * @param {boolean} resumed
   * @param {boolean} recovered
   * @param {boolean} [reset] the resumption found the channel's history reset
   */
  _subscribed(resumed, recovered, reset = false) {
    const { channel, position, epoch } = this;
    this.recovered = resumed ? recovered : null;
    if (reset) this._reset(true);
    if (resumed && !recovered) this.emit("gap", /** @type {GapContext} */ ({ channel, position, epoch }));
    this._setState("subscribed");
    /** @type {SubscribedContext} */
    const context = { channel, resumed, recovered: resumed && recovered, position, epoch };
    this.emit("subscribed", context);
  }

  /** The channel's history was reset (`position` and `epoch` are the new ones). @param {boolean} resumed */
  _reset(resumed) {
    if (this._floor?.[1] !== this.epoch) this._floor = null; // the snapshot was of another history
    /** @type {ResetContext} */
    const context = { channel: this.channel, epoch: this.epoch, position: this.position, resumed };
    this.emit("stream-reset", context);
    this.client.emit("stream-reset", context);
  }

  /** @param {Record<string, any>} envelope */
  _deliver(envelope) {
    this.emit("message", envelope);
    if (!LIFECYCLE_EVENTS.has(envelope.type)) this.emit(envelope.type, envelope);
  }

  /** The subscription is over: unsubscribed, or refused by the server (`error`). @param {Error | null} error */
  _ended(error) {
    this.error = error;
    this._setState("unsubscribed");
    this.emit("unsubscribed", { channel: this.channel, error });
    if (error) this.emit("error", { error });
  }
}
