// A small event emitter: the client and each subscription are one.

/**
 * @typedef {(payload: any) => void} Listener
 */

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Listener>>} */
    this._listeners = new Map();
  }

  /**
   * Call `listener` with the payload of every `event`.
   * @param {string} event
   * @param {Listener} listener
   * @returns {this}
   */
  on(event, listener) {
    let listeners = this._listeners.get(event);
    if (!listeners) this._listeners.set(event, (listeners = new Set()));
    listeners.add(listener);
    return this;
  }

  /**
   * Stop calling `listener` for `event`; without a listener, stop calling all of them.
   * @param {string} event
   * @param {Listener} [listener]
   * @returns {this}
   */
  off(event, listener) {
    if (listener) this._listeners.get(event)?.delete(listener);
    else this._listeners.delete(event);
    return this;
  }

  /**
   * @param {string} event
   * @returns {boolean}
   */
  listens(event) {
    return (this._listeners.get(event)?.size || 0) > 0;
  }

  /**
   * Call every listener of `event`. A listener that throws does not stop the others or the client:
   * its error is rethrown on its own, as the browser does for DOM event listeners.
   * @param {string} event
   * @param {unknown} payload
   */
  emit(event, payload) {
    for (const listener of [...(this._listeners.get(event) || [])]) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
