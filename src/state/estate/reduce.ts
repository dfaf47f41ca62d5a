/**
 * Reduce functions of the global view: getGlobal(key, reduce) collects
 * every instance's item of `key` and reduces them to one value.
 */
import type { StateItem, StateValue } from './proto.js';

/** A custom reduce function: gets the items of every instance that answered and has one. */
export type Reducer<T> = (items: readonly StateItem[]) => T;

export type ReduceName = 'latest' | 'sum' | 'avg';

export class ReduceError extends TypeError {
  override name = 'ReduceError';
}

/** The item written last (highest timestamp; ties broken by owner id, so every reader picks the same). */
export function latestItem(items: readonly StateItem[]): StateItem | undefined {
  let best: StateItem | undefined;
  for (const i of items) if (best === undefined || i.ts > best.ts || (i.ts === best.ts && i.owner > best.owner)) best = i;
  return best;
}

function numeric(items: readonly StateItem[], what: string): (number | bigint)[] {
  return items.map((i) => {
    if (typeof i.value === 'number' || typeof i.value === 'bigint') return i.value;
    throw new ReduceError(`${what}: the item of '${i.key}' at ${i.owner} is a ${Buffer.isBuffer(i.value) ? 'byte string' : typeof i.value}, not a number`);
  });
}

/** Sum of the items: a bigint if every item is a bigint (exact), else a number. 0n for no items. */
export function sumItems(items: readonly StateItem[]): number | bigint {
  const vs = numeric(items, 'sum');
  if (vs.every((v) => typeof v === 'bigint')) return (vs as bigint[]).reduce((a, v) => a + v, 0n);
  return vs.reduce<number>((a, v) => a + Number(v), 0);
}

/** Mean of the items (a number), undefined for no items. */
export function avgItems(items: readonly StateItem[]): number | undefined {
  const vs = numeric(items, 'avg');
  if (vs.length === 0) return undefined;
  if (vs.every((v) => typeof v === 'bigint')) {
    const s = (vs as bigint[]).reduce((a, v) => a + v, 0n);
    return Number(s) / vs.length;
  }
  return vs.reduce<number>((a, v) => a + Number(v), 0) / vs.length;
}

export const reducers = {
  /** the value written last, across all instances */
  latest: (items: readonly StateItem[]): StateValue | undefined => latestItem(items)?.value,
  sum: sumItems,
  avg: avgItems,
} as const;

export type ReducedValue<R> = R extends 'latest' ? StateValue | undefined : R extends 'sum' ? number | bigint : R extends 'avg' ? number | undefined : R extends Reducer<infer T> ? T : never;
