// What an SFTP tracker remembers between a request and its answer (pending requests, open
// handles) lives in maps that share one budget per channel: a number of entries and the length
// of the text they keep (paths). A target that never answers, or a client that opens handles
// without end, cannot make the gateway remember more: exceeding it throws, and the tracker
// closes the channel.

export class TrackingLimitError extends Error {}

export class StateBudget {
  readonly maxEntries: number;
  readonly maxText: number;
  entries = 0;
  text = 0;

  constructor(maxEntries: number, maxText: number) {
    this.maxEntries = maxEntries;
    this.maxText = maxText;
  }

  take(text: number): void {
    if (this.entries + 1 > this.maxEntries) throw new TrackingLimitError(`the SFTP channel has more than ${this.maxEntries} requests awaiting an answer and open handles; the gateway tracks no more`);
    if (this.text + text > this.maxText) throw new TrackingLimitError(`the SFTP channel's requests awaiting an answer and open handles hold more than ${this.maxText} characters of paths; the gateway tracks no more`);
    this.entries++;
    this.text += text;
  }

  give(text: number): void {
    this.entries--;
    this.text -= text;
  }
}

/** A Map whose entries count against a StateBudget; `weigh` says how much text an entry keeps. */
export class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();
  private readonly budget: StateBudget;
  private readonly weigh: (key: K, value: V) => number;

  constructor(budget: StateBudget, weigh: (key: K, value: V) => number) {
    this.budget = budget;
    this.weigh = weigh;
  }

  get(key: K): V | undefined { return this.map.get(key); }

  /** Throws TrackingLimitError when the budget would be exceeded (the channel is then closed). */
  set(key: K, value: V): void {
    this.delete(key);
    this.budget.take(this.weigh(key, value));
    this.map.set(key, value);
  }

  delete(key: K): void {
    const old = this.map.get(key);
    if (old === undefined) return;
    this.budget.give(this.weigh(key, old));
    this.map.delete(key);
  }

  values(): IterableIterator<V> { return this.map.values(); }

  clear(): void {
    for (const [k, v] of this.map) this.budget.give(this.weigh(k, v));
    this.map.clear();
  }
}
