/**
 * Two phases, as in cilium/ebpf: an editable spec of an ELF object (maps and
 * programs by name; resize, pin paths, constants) and, once loaded, a
 * collection that owns the kernel handles.
 */
import path from 'node:path';
import { bpfNative, type NativeBpfObject, type NativeMapSpec, type NativeProgramSpec } from './native.js';
import { native, nativeLog, BpfError, VerifierError, ClosedError, fromNative } from './errors.js';
import { BpfMap } from './map.js';
import { BpfProgram } from './program.js';
import { track, untrack, type Closeable } from './handles.js';

export type MapSpec = Omit<NativeMapSpec, 'fd'>;
export type ProgramSpec = Omit<NativeProgramSpec, 'fd'>;

/** Where a read-only constant (`const volatile` global) lives in .rodata. */
export interface ConstantLayout {
  readonly offset: number;
  readonly size: number;
}

export class BpfObjectSpec implements Closeable {
  #obj: NativeBpfObject | undefined;
  readonly name: string;

  private constructor(
    readonly path: string,
    obj: NativeBpfObject,
  ) {
    this.#obj = obj;
    this.name = path.split('/').pop()!.replace(/\.o$/, '');
    track(this);
  }

  /** Opens (parses) an ELF object; nothing is created in the kernel yet. */
  static open(file: string): BpfObjectSpec {
    const abs = path.resolve(file);
    let obj: NativeBpfObject;
    try {
      obj = new bpfNative.BpfObject(abs);
    } catch (e) {
      const err = fromNative(e);
      if (err instanceof BpfError) throw new BpfError(`cannot open BPF object ${abs}: ${err.message}`, err.errno, err.code, err.op, { cause: err });
      throw err;
    }
    return new BpfObjectSpec(abs, obj);
  }

  get #native(): NativeBpfObject {
    if (this.#obj === undefined) throw new ClosedError(`BPF object ${this.name} is closed`);
    return this.#obj;
  }

  maps(): MapSpec[] {
    return this.#native.maps();
  }

  programs(): ProgramSpec[] {
    return this.#native.programs();
  }

  setMaxEntries(map: string, n: number): this {
    native(() => this.#native.setMaxEntries(map, n));
    return this;
  }

  /** Pins the map at `pinPath` on load, or reuses the map already pinned there. */
  setPinPath(map: string, pinPath: string | null): this {
    native(() => this.#native.setPinPath(map, pinPath));
    return this;
  }

  setAutoload(program: string, on: boolean): this {
    native(() => this.#native.setAutoload(program, on));
    return this;
  }

  /**
   * Sets `const volatile` tunables before load. Offsets come from the BTF of
   * the compiled object (generated layouts), never from hand-kept numbers.
   */
  setConstants(layout: Readonly<Record<string, ConstantLayout>>, values: Readonly<Record<string, number | bigint>>): this {
    const rodata = native(() => this.#native.initialValue('.rodata'));
    if (rodata === null) throw new Error(`${this.name} has no .rodata section`);
    for (const [k, v] of Object.entries(values)) {
      const at = layout[k];
      if (at === undefined) throw new Error(`${this.name} has no constant '${k}'`);
      if (at.size === 8) rodata.writeBigUInt64LE(BigInt(v), at.offset);
      else if (at.size === 4) rodata.writeUInt32LE(Number(v) >>> 0, at.offset);
      else if (at.size === 2) rodata.writeUInt16LE(Number(v), at.offset);
      else rodata.writeUInt8(Number(v), at.offset);
    }
    native(() => this.#native.setInitialValue('.rodata', rodata));
    return this;
  }

  /**
   * Creates maps and loads programs. On failure nothing stays in the kernel,
   * the spec is closed, and a VerifierError carries the whole log.
   */
  load(): BpfCollection {
    const obj = this.#native;
    try {
      obj.load();
    } catch (e) {
      this.close();
      const err = fromNative(e);
      const log = nativeLog(e) ?? '';
      if (err instanceof BpfError && /BEGIN PROG LOAD LOG|processed \d+ insns|invalid|R\d/.test(log))
        throw new VerifierError(this.name, err.errno, err.code, err.op, log, { cause: err });
      if (err instanceof BpfError) throw new BpfError(`${this.name}: load failed: ${err.message}${log ? `\n${log.trim()}` : ''}`, err.errno, err.code, err.op, { cause: err });
      throw err;
    }
    // ownership of the kernel objects moves to the collection
    this.#obj = undefined;
    untrack(this);
    return new BpfCollection(this.name, obj);
  }

  close(): void {
    this.#obj?.close();
    this.#obj = undefined;
    untrack(this);
  }
}

export class BpfCollection implements Closeable {
  /** the libbpf object, or null for a collection opened from pins (its maps and programs own their fds) */
  #obj: NativeBpfObject | null | undefined;
  readonly maps: ReadonlyMap<string, BpfMap>;
  readonly programs: ReadonlyMap<string, BpfProgram>;

  constructor(name: string, obj: NativeBpfObject);
  constructor(name: string, obj: null, opened: { maps: ReadonlyMap<string, BpfMap>; programs: ReadonlyMap<string, BpfProgram> });
  constructor(
    readonly name: string,
    obj: NativeBpfObject | null,
    opened?: { maps: ReadonlyMap<string, BpfMap>; programs: ReadonlyMap<string, BpfProgram> },
  ) {
    this.#obj = obj;
    if (obj === null) {
      this.maps = new Map(opened?.maps ?? []);
      this.programs = new Map(opened?.programs ?? []);
      track(this);
      return;
    }
    const maps = new Map<string, BpfMap>();
    for (const m of obj.maps()) if (m.fd !== undefined && m.fd >= 0) maps.set(m.name, new BpfMap(m.fd, { ownsFd: false }));
    const progs = new Map<string, BpfProgram>();
    for (const p of obj.programs()) if (p.fd !== undefined && p.fd >= 0) progs.set(p.name, new BpfProgram(p.name, p.fd, p.type, { ownsFd: false }));
    this.maps = maps;
    this.programs = progs;
    track(this);
  }

  /**
   * A collection of maps and programs opened from bpffs pins (BpfMap.fromPin,
   * BpfProgram.fromPin): what a restarted process adopts instead of loading.
   * It owns their fds; close() releases them, the pinned objects stay.
   */
  static fromPinned(name: string, maps: ReadonlyMap<string, BpfMap>, programs: ReadonlyMap<string, BpfProgram>): BpfCollection {
    return new BpfCollection(name, null, { maps, programs });
  }

  /** Loads an object file as it is. */
  static load(file: string): BpfCollection {
    return BpfObjectSpec.open(file).load();
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (m === undefined) throw new Error(`${this.name} has no map '${name}' (has: ${[...this.maps.keys()].join(', ')})`);
    return m;
  }

  program(name: string): BpfProgram {
    const p = this.programs.get(name);
    if (p === undefined) throw new Error(`${this.name} has no program '${name}' (has: ${[...this.programs.keys()].join(', ')})`);
    return p;
  }

  get closed(): boolean {
    return this.#obj === undefined;
  }

  /** Releases maps and programs (attachments and pins hold their own references). */
  close(): void {
    if (this.#obj === undefined) return;
    for (const m of this.maps.values()) m.close();
    for (const p of this.programs.values()) p.close();
    this.#obj?.close();
    this.#obj = undefined;
    untrack(this);
  }
}
