/**
 * The loss behind counters that also count frames in flight. A deficit
 * (frames sent minus frames taken in) read while traffic flows is off by
 * what is still on its way: those frames only ever add to a reading, never
 * take from it. So the least of readings SAMPLE_MS apart, once it has not
 * gone down for SETTLED_MS (the receiver has worked off its backlog), is
 * what was lost.
 */
import { sleep } from '../util/mutex.js';

const SAMPLE_MS = 10;
const SETTLED_MS = 300;
const SETTLE_MAX_MS = 3_000;

/**
 * Per key, the least deficit `read` returned, reading until none went down
 * for SETTLED_MS, every one is at most 0, SETTLE_MAX_MS passed or the
 * handover's time is up. `read` answering undefined ends the readings (what
 * was read so far stands).
 */
export async function leastDeficits(read: () => Promise<Map<string, bigint> | undefined>, remaining: () => number): Promise<Map<string, bigint>> {
  const least = new Map<string, bigint>();
  const start = performance.now();
  let fell = start;
  for (;;) {
    const r = await read();
    if (r === undefined) break;
    for (const [k, d] of r) {
      const was = least.get(k);
      if (was === undefined || d < was) {
        least.set(k, d);
        fell = performance.now();
      }
    }
    const now = performance.now();
    if ([...least.values()].every((d) => d <= 0n) || now - fell > SETTLED_MS || now - start > SETTLE_MAX_MS || remaining() <= 0) break;
    await sleep(SAMPLE_MS);
  }
  return least;
}
