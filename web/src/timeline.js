// A room's messages as the page shows them: one per seq, in seq order, whatever order the
// history pages, the resume replay and the live stream bring them in. Pure: no DOM, so
// web/tests/timeline.test.mjs runs it under node.

export class Timeline {
  constructor() {
    /** Ascending seqs of the messages held. */
    this.seqs = [];
    /** seq -> message body (ChatMessagePublish). */
    this.bySeq = new Map();
  }

  get size() {
    return this.seqs.length;
  }

  /** The highest seq held, or null when empty: the room's resume point. */
  get newest() {
    return this.seqs.length ? this.seqs[this.seqs.length - 1] : null;
  }

  /** The lowest seq held, or null when empty: where scrolling back continues. */
  get oldest() {
    return this.seqs.length ? this.seqs[0] : null;
  }

  has(seq) {
    return this.bySeq.has(seq);
  }

  /**
   * Adds a message. Returns the index it now has among the held messages, or -1 when it
   * was not added: already held (a duplicate) or without a usable seq.
   */
  insert(message) {
    const seq = message && message.seq;
    if (!Number.isSafeInteger(seq) || seq < 1 || this.bySeq.has(seq)) return -1;
    let low = 0;
    let high = this.seqs.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.seqs[mid] < seq) low = mid + 1;
      else high = mid;
    }
    this.seqs.splice(low, 0, seq);
    this.bySeq.set(seq, message);
    return low;
  }
}
