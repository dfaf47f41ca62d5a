/**
 * The deadline of the work a control call belongs to (a handover), so that
 * calls made on its behalf deep inside a client do not outlive it: a node
 * that stopped answering costs the handover its remaining time, not one full
 * call deadline per call. Calls made once that time is up (the clean-up a
 * failed handover still owes) get a short floor instead of nothing.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

interface Scope {
  /** epoch ms */
  at: number;
  /** what a call made after `at` still gets (ms) */
  floorMs: number;
}

const scope = new AsyncLocalStorage<Scope>();

/** Runs `fn` with calls inside it bounded by `at` (epoch ms), each keeping at least `floorMs`. */
export function withCallDeadline<T>(at: number, floorMs: number, fn: () => Promise<T>): Promise<T> {
  return scope.run({ at, floorMs }, fn);
}

/** The deadline (epoch ms) of a call that would take at most `defaultMs` on its own. */
export function callDeadline(defaultMs: number, now = Date.now()): number {
  const own = now + defaultMs;
  const s = scope.getStore();
  if (s === undefined) return own;
  return Math.min(own, Math.max(s.at, now + s.floorMs));
}
