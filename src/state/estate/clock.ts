/**
 * Timestamps of E-State items: a hybrid logical clock (Kulkarni et al.,
 * "Logical Physical Clocks", OPODIS 2014) collapsed into one number, µs
 * since the epoch.
 *
 *   write:    ts = max(wall clock, last + 1)          (tick)
 *   message:  last = max(last, timestamp it carries)  (observe)
 *
 * Every message between peers carries the sender's clock (and every item
 * its ts), so a write made after receiving a message is later than every
 * write the sender had made: causally later writes always get a higher ts,
 * whatever the wall clocks say. The "+ 1" is the logical counter: it lets
 * the clock run ahead of the wall clock while writes come faster than one
 * per µs or a peer's clock is ahead, until the wall clock catches up.
 *
 * What "latest" (highest ts, ties broken by owner id) then means:
 *
 *  - one process: nodes share one clock (processClock), so a write is
 *    later than every write made before it in the process, on any node —
 *    also within the same µs;
 *  - processes on one host: causally ordered writes are ordered; other
 *    writes by the wall clock below, which every process derives from the
 *    same kernel clocks — two processes never disagree by 1 ms or more and
 *    usually by a few µs (writes closer together than that, with nothing
 *    between them, are ordered by the tie-break, the same for every
 *    reader);
 *  - hosts: the same, provided their wall clocks are synchronized (NTP,
 *    PTP): writes with no message between them are ordered only up to the
 *    clocks' skew. A host whose clock is ahead drags the others' clocks
 *    ahead too (they run at +1 µs per write until their wall clocks catch
 *    up); no bound is enforced on that.
 */

/** A source of wall-clock time: µs since the epoch. */
export type WallClock = () => number;

// The item clock used to be performance.timeOrigin + performance.now():
// µs resolution, but anchored once per process at its start — an anchor
// taken late (a process descheduled at start-up) or before the system
// clock was stepped stays wrong for the process's lifetime, by any amount.
// Here the same monotonic clock (CLOCK_MONOTONIC, one for the whole host)
// gives the µs, and its anchor is checked against Date.now() (CLOCK_REALTIME,
// also one for the whole host) on every reading: the reading is kept
// inside the millisecond Date.now() shows, and the anchor corrected by
// what the check proves, so it converges to the true offset.
let anchorUs = performance.timeOrigin * 1000;

/** Wall-clock time in µs: the monotonic clock, anchored to (and never outside the current millisecond of) Date.now(). */
export function wallClockUs(): number {
  const before = Date.now() * 1000;
  const mono = performance.now() * 1000;
  // the true time of reading `mono` is at least `before`, and below the end of the millisecond Date.now() shows after it
  let us = Math.floor(mono + anchorUs);
  if (us < before) {
    anchorUs += before - us;
    us = before;
  } else if (us > before + 999) {
    const after = Date.now() * 1000 + 999;
    if (us > after) {
      anchorUs -= us - after;
      us = after;
    }
  }
  return us;
}

export class HybridClock {
  #last = 0;

  constructor(readonly wall: WallClock = wallClockUs) {}

  /** A timestamp for a write: higher than every one this clock gave out or observed. */
  tick(): number {
    this.#last = Math.max(this.wall(), this.#last + 1);
    return this.#last;
  }

  /**
   * `n` timestamps for writes made at one instant (one reading of the wall
   * clock): returns the first; the others are first + 1 … first + n - 1,
   * all higher than every one this clock gave out or observed before.
   * (On this VM a wall-clock reading is a system call of ~0.2 µs, which is
   * what bounds single writes.)
   */
  tickMany(n: number): number {
    const first = Math.max(this.wall(), this.#last + 1);
    this.#last = first + Math.max(0, n - 1);
    return first;
  }

  /** The clock's value now, to send with a message (gives no timestamp out). */
  now(): number {
    this.#last = Math.max(this.wall(), this.#last);
    return this.#last;
  }

  /**
   * A timestamp received from a peer (a message's clock, an item's ts):
   * later writes get a higher one. (Beyond 2^53 µs — year 2255 — "+ 1" no
   * longer counts: such timestamps are ignored.)
   */
  observe(ts: number | undefined): void {
    if (ts !== undefined && ts > this.#last && ts < Number.MAX_SAFE_INTEGER) this.#last = ts;
  }
}

/** The clock every EStateNode of this process uses, unless given its own. */
export const processClock = new HybridClock();
