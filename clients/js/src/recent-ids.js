// Dropping messages delivered twice (a replay overlapping live delivery), in bounded memory.

export class RecentIds {
  /** @param {number} size how many ids to remember; the oldest are forgotten first */
  constructor(size) {
    this.size = size;
    /** @type {Set<unknown>} */
    this._ids = new Set();
  }

  /**
   * True if `id` was seen recently; otherwise remember it and return false.
   * @param {unknown} id
   */
  seen(id) {
    if (this._ids.has(id)) return true;
    this._ids.add(id);
    if (this._ids.size > this.size) this._ids.delete(this._ids.values().next().value);
    return false;
  }
}
