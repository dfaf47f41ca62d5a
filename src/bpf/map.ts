/**
 * A loaded BPF map: raw operations on Buffers (BpfMap) and a typed view over
 * codecs (TypedMap). Per-CPU maps take and return one value per possible CPU.
 */
import { bpfNative } from './native.js';
import { native, BpfError, ClosedError } from './errors.js';
import { PERCPU_MAP_TYPES, MapUpdate } from './constants.js';
import type { Codec } from './codec.js';
import { openPin } from './pins.js';

export interface MapInfo {
  readonly id: number;
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
}

let possibleCpus: number | undefined;
export function numPossibleCpus(): number {
  possibleCpus ??= bpfNative.numPossibleCpus();
  return possibleCpus;
}

export class BpfMap {
  readonly info: MapInfo;
  readonly perCpu: boolean;
  /** bytes of one CPU's value inside a per-CPU value buffer (8-aligned) */
  readonly perCpuStride: number;
  #fd: number;
  readonly #ownsFd: boolean;

  constructor(fd: number, options: { ownsFd: boolean }) {
    this.#fd = fd;
    this.#ownsFd = options.ownsFd;
    this.info = native(() => bpfNative.mapInfo(fd));
    this.perCpu = PERCPU_MAP_TYPES.has(this.info.type);
    this.perCpuStride = Math.ceil(this.info.valueSize / 8) * 8;
  }

  /** Opens a map pinned in bpffs; the returned map owns its fd. */
  static fromPin(path: string): BpfMap {
    return new BpfMap(openPin(path, 'map').fd, { ownsFd: true });
  }

  get fd(): number {
    if (this.#fd < 0) throw new ClosedError(`map ${this.info.name} is closed`);
    return this.#fd;
  }

  get name(): string {
    return this.info.name;
  }

  /** Size of the value buffer the kernel reads and writes for this map. */
  get valueBufferSize(): number {
    return this.perCpu ? this.perCpuStride * numPossibleCpus() : this.info.valueSize;
  }

  lookup(key: Buffer): Buffer | undefined {
    return native(() => bpfNative.mapLookup(this.fd, key, this.valueBufferSize)) ?? undefined;
  }

  /** Per-CPU maps: one Buffer per possible CPU. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    const all = this.lookup(key);
    return all === undefined ? undefined : this.splitPerCpu(all);
  }

  lookupAndDelete(key: Buffer): Buffer | undefined {
    return native(() => bpfNative.mapLookupAndDelete(this.fd, key, this.valueBufferSize)) ?? undefined;
  }

  update(key: Buffer, value: Buffer, flags: number = MapUpdate.ANY): void {
    if (value.length !== this.valueBufferSize) throw new RangeError(`map ${this.name}: value must be ${this.valueBufferSize} bytes, got ${value.length}`);
    native(() => bpfNative.mapUpdate(this.fd, key, value, flags));
  }

  /** Per-CPU maps: the same value on every CPU, or one value per CPU. */
  updatePerCpu(key: Buffer, values: Buffer | readonly Buffer[], flags: number = MapUpdate.ANY): void {
    const n = numPossibleCpus();
    const all = Buffer.alloc(this.perCpuStride * n);
    for (let c = 0; c < n; c++) {
      const v = Buffer.isBuffer(values) ? values : values[c];
      if (v === undefined) throw new RangeError(`map ${this.name}: no value for CPU ${c}`);
      v.copy(all, c * this.perCpuStride);
    }
    this.update(key, all, flags);
  }

  /** true when an element was deleted, false when there was none. */
  delete(key: Buffer): boolean {
    return native(() => bpfNative.mapDelete(this.fd, key));
  }

  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next: Buffer | null = native(() => bpfNative.mapNextKey(this.fd, prev, this.info.keySize));
      if (next === null) return;
      yield next;
      prev = next;
    }
  }

  *entries(): Generator<[Buffer, Buffer]> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v !== undefined) yield [k, v];
    }
  }

  /** Every entry through BPF_MAP_LOOKUP_BATCH, `chunk` elements per call; each key and value a view of its call's buffer (no copy). */
  lookupBatch(chunk = 256): { keys: Buffer[]; values: Buffer[] } {
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    const ks = this.info.keySize;
    const vs = this.valueBufferSize;
    // hash maps use a 4-byte bucket cursor, arrays a key-sized one
    const tokenSize = Math.max(ks, 8);
    let token: Buffer | null = null;
    for (;;) {
      const r = native(() => bpfNative.mapLookupBatch(this.fd, token, ks, vs, chunk, tokenSize));
      for (let i = 0; i < r.count; i++) {
        keys.push(r.keys.subarray(i * ks, (i + 1) * ks));
        values.push(r.values.subarray(i * vs, (i + 1) * vs));
      }
      if (r.done) return { keys, values };
      token = r.token;
    }
  }

  updateBatch(keys: readonly Buffer[], values: readonly Buffer[], flags: number = MapUpdate.ANY): number {
    if (keys.length !== values.length) throw new RangeError('updateBatch: keys and values differ in length');
    if (keys.length === 0) return 0;
    return native(() => bpfNative.mapUpdateBatch(this.fd, Buffer.concat(keys), Buffer.concat(values), keys.length, flags));
  }

  deleteBatch(keys: readonly Buffer[]): number {
    if (keys.length === 0) return 0;
    return native(() => bpfNative.mapDeleteBatch(this.fd, Buffer.concat(keys), keys.length));
  }

  /**
   * Deletes the keys that exist, in BPF_MAP_DELETE_BATCH calls; returns how
   * many it deleted. The kernel stops a batch at the first missing key
   * (ENOENT, saying how far it got): that key is skipped and the rest goes
   * in the next batch.
   */
  deletePresentBatch(keys: readonly Buffer[]): number {
    if (keys.length === 0) return 0;
    const ks = this.info.keySize;
    for (const k of keys) if (k.length !== ks) throw new RangeError(`deletePresentBatch: a key of ${k.length} bytes, the map's are ${ks}`);
    const all = Buffer.concat(keys);
    let at = 0;
    let deleted = 0;
    while (at < keys.length) {
      try {
        deleted += native(() => bpfNative.mapDeleteBatch(this.fd, all.subarray(at * ks), keys.length - at));
        return deleted;
      } catch (e) {
        const completed = batchCompleted(e);
        if (!(e instanceof BpfError) || e.code !== 'ENOENT' || completed === undefined) throw e;
        deleted += completed;
        at += completed + 1;
      }
    }
    return deleted;
  }

  /** Deletes every element (not possible for arrays: their slots always exist). */
  clear(): void {
    for (const k of [...this.keys()]) this.delete(k);
  }

  splitPerCpu(all: Buffer): Buffer[] {
    const out: Buffer[] = [];
    for (let c = 0; c < numPossibleCpus(); c++) out.push(all.subarray(c * this.perCpuStride, c * this.perCpuStride + this.info.valueSize));
    return out;
  }

  pin(path: string): void {
    native(() => bpfNative.objPin(this.fd, path));
  }

  close(): void {
    if (this.#fd >= 0 && this.#ownsFd) bpfNative.closeFd(this.#fd);
    this.#fd = -1;
  }

  /** V is taken from what the codec decodes (struct codecs also encode partial values). */
  typed<K, V>(key: Codec<K>, value: { readonly size: number; decode(b: Buffer, offset?: number): V; encode(v: NoInfer<V>): Buffer }): TypedMap<K, V> {
    return new TypedMap<K, V>(this, key, value);
  }
}

/** A map seen through codecs. For per-CPU maps values are arrays, one per CPU. */
export class TypedMap<K, V> {
  constructor(
    readonly raw: BpfMap,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
  ) {
    if (key.size !== raw.info.keySize) throw new RangeError(`map ${raw.name}: key codec is ${key.size} bytes, the map's key ${raw.info.keySize}`);
    if (value.size !== raw.info.valueSize) throw new RangeError(`map ${raw.name}: value codec is ${value.size} bytes, the map's value ${raw.info.valueSize}`);
  }

  get(k: K): V | undefined {
    const v = this.raw.lookup(this.key.encode(k));
    return v === undefined ? undefined : this.value.decode(v);
  }

  getPerCpu(k: K): V[] | undefined {
    return this.raw.lookupPerCpu(this.key.encode(k))?.map((b) => this.value.decode(b));
  }

  set(k: K, v: V, flags: number = MapUpdate.ANY): void {
    if (this.raw.perCpu) this.raw.updatePerCpu(this.key.encode(k), this.value.encode(v), flags);
    else this.raw.update(this.key.encode(k), this.value.encode(v), flags);
  }

  delete(k: K): boolean {
    return this.raw.delete(this.key.encode(k));
  }

  *entries(): Generator<[K, V]> {
    for (const [k, v] of this.raw.entries()) yield [this.key.decode(k), this.value.decode(v)];
  }

  /** All entries through batch lookups; per-CPU maps give each CPU's value. */
  entriesBatch(): [K, V[]][] {
    const { keys, values } = this.raw.lookupBatch();
    return keys.map((k, i) => {
      const v = values[i]!;
      const parts = this.raw.perCpu ? this.raw.splitPerCpu(v) : [v];
      return [this.key.decode(k), parts.map((p) => this.value.decode(p))];
    });
  }

  setBatch(entries: readonly (readonly [K, V])[], flags: number = MapUpdate.ANY): number {
    if (this.raw.perCpu) throw new Error(`map ${this.raw.name}: batch writes of per-CPU maps take raw buffers`);
    return this.raw.updateBatch(
      entries.map(([k]) => this.key.encode(k)),
      entries.map(([, v]) => this.value.encode(v)),
      flags,
    );
  }
}

/** How many elements a failed batch call processed (the addon puts it on the native error, the cause of the typed one). */
export function batchCompleted(e: unknown): number | undefined {
  const c = e instanceof Error ? (e.cause as { completed?: unknown } | undefined)?.completed : undefined;
  return typeof c === 'number' ? c : undefined;
}
