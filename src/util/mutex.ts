/** A FIFO async mutex: one holder at a time, waiters in arrival order. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value other than undefined, or the deadline passes. */
export async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, intervalMs = 1): Promise<T | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (performance.now() >= deadline) return undefined;
    await sleep(intervalMs);
  }
}

/**
 * Independent operations at once (e.g. calls to different hosts): resolves
 * with every result once all have ended; rejects with the first failure
 * (in argument order) only once every one has ended, so none is still in
 * flight when the caller handles the failure (a rollback must not race a
 * write that is yet to land).
 */
export async function allEnded<T>(ops: readonly Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(ops);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}
