/**
 * The node's pin store: one bpffs folder per node holding every map, program
 * and XDP link the node loaded, and a manifest saying what is pinned there.
 *
 * Why: a program attached through a bpf_link held only by a process's fd is
 * detached when that process dies. Pinned, the link (and through it the
 * program and its maps) lives on in the kernel: a crash, an upgrade or a
 * kill -9 of the node never stops traffic, and a restarted node re-adopts
 * the pins instead of loading anew (counters continue, rules stay).
 *
 * Where: `<bpffsDir>/<node>` (default /sys/fs/bpf/sharpctl/<node>). Where
 * that folder cannot be created (some hosts and sandboxes refuse mkdir in
 * /sys/fs/bpf with EPERM while still allowing pins there), the store mounts
 * a private bpffs (default /run/sharpctl/bpffs, kept mounted) and uses
 * `<that>/<node>`. The manifest is JSON in `<stateDir>` (default
 * /run/sharpctl/<node>), because bpffs holds no regular files; both are
 * gone after a reboot, together.
 *
 * A restart validates before adopting: the manifest's version and node, and
 * for every object the ids of what its pins hold, the interfaces its links
 * are on and the programs attached there (PinMismatchError lists every
 * difference).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, statfsSync, unlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  BpfCollection,
  BpfMap,
  BpfProgram,
  XdpLink,
  XdpBusyError,
  attachedXdp,
  detachXdpNetlink,
  detachPinnedLink,
  ifindexOf,
  type XdpMode,
} from '../bpf/index.js';
import { deleteLink } from '../net/iproute.js';

/** Version of the manifest's format; a manifest of another version is never adopted. */
export const PIN_MANIFEST_VERSION = 1;

export const DEFAULT_BPFFS_DIR = '/sys/fs/bpf/sharpctl';
export const DEFAULT_PRIVATE_BPFFS = '/run/sharpctl/bpffs';
export const DEFAULT_STATE_ROOT = '/run/sharpctl';

const BPF_FS_MAGIC = 0xcafe4a11;
// bpffs refuses names with a dot (EPERM: the kernel reserves dots for extensions)
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;

/** A bpffs-safe file name: '%' and '.' (refused by bpffs) escaped, e.g. eth0.100 -> eth0%2E100. */
export function pinName(prefix: 'map' | 'prog' | 'link', name: string): string {
  return `${prefix}-${name.replace(/[%.]/g, (c) => (c === '%' ? '%25' : '%2E'))}`;
}

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };

export interface PinnedMapRecord {
  name: string;
  id: number;
}

export interface PinnedProgramRecord {
  name: string;
  id: number;
}

export interface PinnedLinkRecord {
  /** file name of the pin inside the object's folder */
  pin: string;
  /** the program attached (a name from the object's programs) */
  program: string;
  programId: number;
  /** the bpf_link id */
  id: number;
  ifname: string;
  ifindex: number;
  netns: string | null;
  mode: XdpMode;
  /** 'attach': carries traffic; 'anchor': keeps a program in the XDP dispatcher */
  purpose: 'attach' | 'anchor';
}

export interface PinnedInterfaceRecord {
  ifname: string;
  netns: string | null;
}

/** One loaded ELF object instance (e.g. the switch s1, the agent of vnf1). */
export interface PinnedObjectRecord {
  kind: string;
  name: string;
  /** the ELF file it was loaded from (basename) */
  object: string;
  /** 'loading' until every link is attached and pinned */
  state: 'loading' | 'ready';
  maps: PinnedMapRecord[];
  programs: PinnedProgramRecord[];
  links: PinnedLinkRecord[];
  /** interfaces this object created (dispatcher anchors): deleted on detach */
  interfaces: PinnedInterfaceRecord[];
  /** what the loader needs to rebuild its view on adopt */
  config: JsonValue;
}

export interface PinManifest {
  version: number;
  node: string;
  pinDir: string;
  updatedAt: string;
  objects: PinnedObjectRecord[];
}

export interface PinStoreOptions {
  /** the node's name: [A-Za-z0-9_.-], at most 64 characters */
  node: string;
  /** the node's pin folder, inside a bpffs; default: `<bpffsDir>/<node>`, or the private bpffs */
  pinDir?: string;
  /** bpffs folder holding one folder per node (default /sys/fs/bpf/sharpctl) */
  bpffsDir?: string;
  /** where to mount a private bpffs when bpffsDir/<node> cannot be created (default /run/sharpctl/bpffs) */
  privateMount?: string;
  /** folder of the manifest (default /run/sharpctl/<node>) */
  stateDir?: string;
}

/** How the pin folder was found. */
export type PinLocation = 'bpffs' | 'private-bpffs' | 'configured' | 'manifest';

/** The store cannot be opened or written (location, permissions, manifest). */
export class PinStoreError extends Error {
  override name = 'PinStoreError';
  constructor(
    message: string,
    /** errno name of the system call that failed, when one did */
    readonly code?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** What the pins hold is not what the manifest says: the object cannot be adopted. */
export class PinMismatchError extends Error {
  override name = 'PinMismatchError';
  constructor(
    readonly kind: string,
    readonly objectName: string,
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`${kind} ${objectName} cannot be adopted from its pins: ${problems.join('; ')}`, options);
  }
}

/** The object is pinned already (adopt or detach it), or is not pinned (load it). */
export class PinStateError extends Error {
  override name = 'PinStateError';
}

function errnoCode(e: unknown): string | undefined {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' ? (e as NodeJS.ErrnoException).code : undefined;
}

function isBpffs(dir: string): boolean {
  try {
    return statfsSync(dir).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** mkdir -p that reports the errno of the first refusal. */
function mkdirp(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new PinStoreError(`cannot create ${dir}: ${e instanceof Error ? e.message : String(e)}`, errnoCode(e), { cause: e });
  }
}

const REFUSED = new Set(['EPERM', 'EACCES', 'EROFS', 'ENOTDIR', 'ENOENT']);

/**
 * Mounts a bpffs at `dir` unless one is there already. A lock folder next to
 * it keeps two nodes starting at once from stacking two mounts.
 */
export function ensurePrivateBpffs(dir: string): void {
  if (isBpffs(dir)) return;
  mkdirp(dir);
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw new PinStoreError(`cannot lock ${lock}: ${String(e)}`, errnoCode(e), { cause: e });
      try {
        if (Date.now() - statSync(lock).mtimeMs > 30_000) rmdirSync(lock); // left by a process that died
      } catch {
        // removed meanwhile
      }
      if (Date.now() > deadline) throw new PinStoreError(`${lock} is held: another node is mounting ${dir}`, 'EBUSY');
      execFileSync('sleep', ['0.02']);
    }
  }
  try {
    if (!isBpffs(dir)) {
      try {
        execFileSync('mount', ['-t', 'bpf', 'bpf', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (e) {
        const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
        throw new PinStoreError(`cannot mount a bpffs at ${dir}: ${stderr || String(e)}`, 'EPERM', { cause: e });
      }
    }
  } finally {
    rmdirSync(lock);
  }
}

function checkName(what: string, name: string): void {
  if (!NAME_RE.test(name)) throw new PinStoreError(`${what} '${name}' must match ${NAME_RE} (it names a bpffs folder, and bpffs refuses dots)`);
}

/** The folder of one object inside the node's folder, e.g. switch-s1. */
function objectFolder(kind: string, name: string): string {
  return `${kind}-${name}`;
}

// ------------------------------------------------------------ manifest validation

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function problemsOfRecord(r: unknown, i: number): string[] {
  if (!isObj(r)) return [`objects[${i}] is not an object`];
  const p: string[] = [];
  for (const k of ['kind', 'name', 'object', 'state'] as const) if (typeof r[k] !== 'string') p.push(`objects[${i}].${k} is not a string`);
  for (const k of ['maps', 'programs', 'links', 'interfaces'] as const) if (!Array.isArray(r[k])) p.push(`objects[${i}].${k} is not a list`);
  for (const k of ['maps', 'programs'] as const)
    if (Array.isArray(r[k])) for (const m of r[k] as unknown[]) if (!isObj(m) || typeof m['name'] !== 'string' || typeof m['id'] !== 'number') p.push(`objects[${i}].${k} has a malformed entry`);
  if (Array.isArray(r['links']))
    for (const l of r['links'] as unknown[])
      if (!isObj(l) || typeof l['pin'] !== 'string' || typeof l['program'] !== 'string' || typeof l['id'] !== 'number' || typeof l['ifname'] !== 'string' || typeof l['ifindex'] !== 'number')
        p.push(`objects[${i}].links has a malformed entry`);
  return p;
}

/** Parses and checks a manifest; throws PinStoreError naming what is wrong. */
export function parseManifest(text: string, expect: { node: string; file: string }): PinManifest {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PinStoreError(`${expect.file}: not JSON (${e instanceof Error ? e.message : String(e)})`, undefined, { cause: e });
  }
  if (!isObj(v)) throw new PinStoreError(`${expect.file}: not a manifest`);
  if (v['version'] !== PIN_MANIFEST_VERSION) throw new PinStoreError(`${expect.file}: manifest version ${String(v['version'])}, this sharpctl reads version ${PIN_MANIFEST_VERSION}`);
  if (v['node'] !== expect.node) throw new PinStoreError(`${expect.file}: the manifest of node '${String(v['node'])}', not of '${expect.node}'`);
  if (typeof v['pinDir'] !== 'string') throw new PinStoreError(`${expect.file}: no pinDir`);
  if (!Array.isArray(v['objects'])) throw new PinStoreError(`${expect.file}: no objects list`);
  const problems = (v['objects'] as unknown[]).flatMap(problemsOfRecord);
  if (problems.length > 0) throw new PinStoreError(`${expect.file}: ${problems.join('; ')}`);
  return v as unknown as PinManifest;
}

// ------------------------------------------------------------ never clobber

/**
 * Checks the XDP hook of `ifname` before attaching to it, and returns its
 * ifindex. Free: fine. A program this node pinned (per `store`): refused,
 * whatever `replace` says (adopt or detach it instead). Any other program:
 * refused with its id, name and mode, unless `replace`, in which case it is
 * detached (netlink attachments only; a bpf_link can only be detached by its
 * owner). Between that detach and the caller's attach the interface runs no
 * XDP program for a moment.
 */
export function claimXdpHook(ifname: string, netns: string | undefined, o: { replace: boolean; store?: PinStore }): number {
  const ifindex = ifindexOf(ifname, netns);
  const current = attachedXdp(ifindex, netns);
  if (current === undefined) return ifindex;
  const owner = o.store?.ownerOfProgram(current.progId);
  if (owner !== undefined && o.store !== undefined)
    throw new XdpBusyError(ifname, netns, current.progId, current.name, current.mode, `it is pinned by node ${o.store.node} as ${owner.kind} ${owner.name}: adopt it or detach it first`);
  if (!o.replace) throw new XdpBusyError(ifname, netns, current.progId, current.name, current.mode, 'it was not attached by this node; pass replace: true to replace it');
  try {
    detachXdpNetlink(ifindex, current.mode, netns);
  } catch (e) {
    throw new XdpBusyError(ifname, netns, current.progId, current.name, current.mode, `it cannot be replaced (${e instanceof Error ? e.message : String(e)}): a bpf_link holding it can only be detached by its owner`, { cause: e });
  }
  return ifindex;
}

// ------------------------------------------------------------ the store

export interface PinDetachReport {
  /** links detached */
  links: number;
  /** pins removed */
  pins: number;
  /** interfaces (dispatcher anchors) deleted */
  interfaces: number;
}

export interface AttachPinnedOptions {
  netns?: string | undefined;
  mode?: XdpMode;
  /** replace a program this node did not pin (it is detached first) */
  replace?: boolean;
  purpose?: 'attach' | 'anchor';
}

export class PinStore {
  readonly node: string;
  readonly pinDir: string;
  readonly stateDir: string;
  readonly manifestPath: string;
  readonly location: PinLocation;
  /** the folder holding node folders, removed on detach when empty and created by us */
  readonly #parent: string | undefined;
  #manifest: PinManifest;

  private constructor(node: string, pinDir: string, stateDir: string, location: PinLocation, parent: string | undefined, manifest: PinManifest | undefined) {
    this.node = node;
    this.pinDir = pinDir;
    this.stateDir = stateDir;
    this.manifestPath = path.join(stateDir, 'manifest.json');
    this.location = location;
    this.#parent = parent;
    this.#manifest = manifest ?? { version: PIN_MANIFEST_VERSION, node, pinDir, updatedAt: new Date().toISOString(), objects: [] };
  }

  /**
   * Opens (creating when needed) the node's pin folder and reads its
   * manifest. A manifest left by an earlier run names the pin folder, so a
   * restart finds its pins wherever the first run put them.
   */
  static open(o: PinStoreOptions): PinStore {
    checkName('node name', o.node);
    const stateDir = o.stateDir ?? path.join(DEFAULT_STATE_ROOT, o.node);
    const manifestPath = path.join(stateDir, 'manifest.json');
    const manifest = existsSync(manifestPath) ? parseManifest(readFileSync(manifestPath, 'utf8'), { node: o.node, file: manifestPath }) : undefined;
    if (o.pinDir !== undefined) {
      if (manifest !== undefined && path.resolve(manifest.pinDir) !== path.resolve(o.pinDir))
        throw new PinStoreError(`${manifestPath} says node ${o.node} pinned into ${manifest.pinDir}, not ${o.pinDir}: detach it there first`);
      PinStore.#makePinDir(o.pinDir);
      return new PinStore(o.node, path.resolve(o.pinDir), stateDir, 'configured', undefined, manifest);
    }
    const bpffsDir = o.bpffsDir ?? DEFAULT_BPFFS_DIR;
    const privateMount = o.privateMount ?? DEFAULT_PRIVATE_BPFFS;
    if (manifest !== undefined) {
      // where the first run put them; a private bpffs that is gone took the pins with it (adopt then reports them missing)
      const under = (root: string): boolean => path.resolve(manifest.pinDir).startsWith(`${path.resolve(root)}/`);
      if (under(privateMount)) ensurePrivateBpffs(privateMount);
      PinStore.#makePinDir(manifest.pinDir);
      return new PinStore(o.node, manifest.pinDir, stateDir, 'manifest', under(bpffsDir) ? bpffsDir : undefined, manifest);
    }
    const direct = path.join(bpffsDir, o.node);
    if (isBpffs(path.dirname(bpffsDir)) || isBpffs(bpffsDir)) {
      try {
        mkdirSync(direct, { recursive: true, mode: 0o700 });
        return new PinStore(o.node, direct, stateDir, 'bpffs', bpffsDir, undefined);
      } catch (e) {
        if (!REFUSED.has(errnoCode(e) ?? '')) throw new PinStoreError(`cannot create ${direct}: ${String(e)}`, errnoCode(e), { cause: e });
        // refused (EPERM here and there): fall back to a private bpffs
      }
    }
    ensurePrivateBpffs(privateMount);
    const inPrivate = path.join(privateMount, o.node);
    PinStore.#makePinDir(inPrivate);
    return new PinStore(o.node, inPrivate, stateDir, 'private-bpffs', undefined, undefined);
  }

  static #makePinDir(dir: string): void {
    mkdirp(dir);
    if (!isBpffs(dir)) throw new PinStoreError(`${dir} is not on a bpffs (mount -t bpf bpf <dir>)`, 'ENOTSUP');
  }

  /** A copy of the manifest as it stands. */
  manifest(): PinManifest {
    return structuredClone(this.#manifest);
  }

  get(kind: string, name: string): PinnedObjectRecord | undefined {
    const r = this.#manifest.objects.find((o) => o.kind === kind && o.name === name);
    return r === undefined ? undefined : structuredClone(r);
  }

  list(kind?: string): PinnedObjectRecord[] {
    return this.#manifest.objects.filter((o) => kind === undefined || o.kind === kind).map((o) => structuredClone(o));
  }

  /** Records (adds or replaces) an object and writes the manifest atomically. */
  put(rec: PinnedObjectRecord): void {
    const objects = this.#manifest.objects.filter((o) => !(o.kind === rec.kind && o.name === rec.name));
    objects.push(structuredClone(rec));
    this.#write({ ...this.#manifest, objects });
  }

  #forget(kind: string, name: string): void {
    this.#write({ ...this.#manifest, objects: this.#manifest.objects.filter((o) => !(o.kind === kind && o.name === name)) });
  }

  #write(m: PinManifest): void {
    const next: PinManifest = { ...m, updatedAt: new Date().toISOString() };
    mkdirp(this.stateDir);
    const tmp = `${this.manifestPath}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
      renameSync(tmp, this.manifestPath);
    } catch (e) {
      throw new PinStoreError(`cannot write ${this.manifestPath}: ${String(e)}`, errnoCode(e), { cause: e });
    }
    this.#manifest = next;
  }

  /** The pin folder of one object (created). */
  objectDir(kind: string, name: string): string {
    if (!/^[a-z]+$/.test(kind)) throw new PinStoreError(`object kind '${kind}' must be lower-case letters`);
    checkName('object name', name);
    const dir = path.join(this.pinDir, objectFolder(kind, name));
    mkdirp(dir);
    return dir;
  }

  /** Which pinned object a program id belongs to, if any. */
  ownerOfProgram(progId: number): PinnedObjectRecord | undefined {
    return this.#manifest.objects.find((o) => o.programs.some((p) => p.id === progId));
  }

  // ------------------------------------------------------------ pinning a load

  /**
   * Pins every map (internal ones excepted: .rodata and friends are reached
   * only through the programs) and every program of a freshly loaded
   * collection, and records the object as 'loading'. Throws PinStateError
   * when the object is pinned already.
   */
  pinCollection(kind: string, name: string, coll: BpfCollection, o: { object: string; config: JsonValue }): PinnedObjectRecord {
    if (this.get(kind, name) !== undefined) throw new PinStateError(`${kind} ${name} is pinned already in ${this.pinDir} (node ${this.node}): adopt it, or detach it first`);
    const dir = this.objectDir(kind, name);
    const rec: PinnedObjectRecord = { kind, name, object: o.object, state: 'loading', maps: [], programs: [], links: [], interfaces: [], config: o.config };
    // recorded before the first pin: a crash from here on leaves a record that detach() cleans up
    this.put(rec);
    try {
      for (const [mapName, m] of coll.maps) {
        if (mapName.startsWith('.') || mapName.includes('.')) continue;
        m.pin(path.join(dir, pinName('map', mapName)));
        rec.maps.push({ name: mapName, id: m.info.id });
      }
      for (const [progName, p] of coll.programs) {
        p.pin(path.join(dir, pinName('prog', progName)));
        rec.programs.push({ name: progName, id: p.id });
      }
      this.put(rec);
    } catch (e) {
      this.unpin(kind, name);
      throw e;
    }
    return rec;
  }

  /**
   * Attaches `program` to `ifname` through a bpf_link, pins the link and
   * records it. Never clobbers: a program already attached there that this
   * node did not pin is refused (XdpBusyError naming it) unless `replace`;
   * one this node pinned is always refused (adopt or detach it).
   */
  attachPinned(rec: PinnedObjectRecord, program: BpfProgram, programName: string, ifname: string, o: AttachPinnedOptions = {}): XdpLink {
    const netns = o.netns;
    claimXdpHook(ifname, netns, { replace: o.replace ?? false, store: this });
    const mode = o.mode ?? 'auto';
    const link = program.attachXdp(ifname, { ...(netns === undefined ? {} : { netns }), mode });
    const pin = pinName('link', ifname);
    try {
      link.pin(this.pinPath(rec, pin));
      this.recordLink(rec, link, { pin, program: programName, programId: program.id, mode, purpose: o.purpose ?? 'attach' });
    } catch (e) {
      link.close();
      try {
        unlinkSync(this.pinPath(rec, pin));
      } catch {
        // never pinned
      }
      throw e;
    }
    return link;
  }

  /** Path of a pin (file name `pin`) in an object's folder. */
  pinPath(rec: { kind: string; name: string }, pin: string): string {
    return path.join(this.objectDir(rec.kind, rec.name), pin);
  }

  /** Records a link pinned (by the caller) in the object's folder. */
  recordLink(rec: PinnedObjectRecord, link: XdpLink, o: { pin: string; program: string; programId: number; mode: XdpMode; purpose: 'attach' | 'anchor' }): void {
    const info = link.info();
    rec.links = rec.links.filter((l) => l.pin !== o.pin);
    rec.links.push({ ...o, id: info.id, ifname: link.ifname, ifindex: link.ifindex, netns: link.netns ?? null });
    this.put(rec);
  }

  /** Marks the object fully loaded. */
  markReady(rec: PinnedObjectRecord): void {
    rec.state = 'ready';
    this.put(rec);
  }

  // ------------------------------------------------------------ adopting

  /** The record of an object to adopt; PinStateError when there is none or it never finished loading. */
  adoptable(kind: string, name: string): PinnedObjectRecord {
    const rec = this.get(kind, name);
    if (rec === undefined) throw new PinStateError(`${kind} ${name} is not pinned by node ${this.node} (${this.manifestPath}${existsSync(this.manifestPath) ? '' : ' does not exist'})`);
    if (rec.state !== 'ready') throw new PinMismatchError(kind, name, ['its load never finished (the node died while loading it): detach it and load it again']);
    return rec;
  }

  /**
   * Opens an object's maps and programs from their pins, checking each holds
   * the object the manifest recorded (same id). On any difference nothing
   * stays open and PinMismatchError lists every one.
   */
  openCollection(rec: PinnedObjectRecord): BpfCollection {
    const dir = path.join(this.pinDir, objectFolder(rec.kind, rec.name));
    const maps = new Map<string, BpfMap>();
    const programs = new Map<string, BpfProgram>();
    const problems: string[] = [];
    for (const m of rec.maps) {
      try {
        const map = BpfMap.fromPin(path.join(dir, pinName('map', m.name)));
        maps.set(m.name, map);
        if (map.info.id !== m.id) problems.push(`map ${m.name} is id ${map.info.id}, the manifest says ${m.id}`);
      } catch (e) {
        problems.push(`map ${m.name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    for (const p of rec.programs) {
      try {
        const prog = BpfProgram.fromPin(path.join(dir, pinName('prog', p.name)));
        programs.set(p.name, prog);
        if (prog.id !== p.id) problems.push(`program ${p.name} is id ${prog.id}, the manifest says ${p.id}`);
      } catch (e) {
        problems.push(`program ${p.name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (problems.length > 0) {
      for (const m of maps.values()) m.close();
      for (const p of programs.values()) p.close();
      throw new PinMismatchError(rec.kind, rec.name, problems);
    }
    return BpfCollection.fromPinned(rec.name, maps, programs);
  }

  /**
   * Opens a recorded link from its pin and checks it is the same link, still
   * attached to the same interface (same ifindex under the same name) with
   * the same program, and that program is what the interface runs.
   */
  openLink(rec: PinnedObjectRecord, l: PinnedLinkRecord): XdpLink {
    const netns = l.netns ?? undefined;
    const link = XdpLink.fromPin(path.join(this.pinDir, objectFolder(rec.kind, rec.name), l.pin), l.ifname, netns);
    const problems: string[] = [];
    try {
      const info = link.info();
      if (info.id !== l.id) problems.push(`link ${l.pin} is id ${info.id}, the manifest says ${l.id}`);
      if (info.progId !== l.programId) problems.push(`link ${l.pin} holds program ${info.progId}, the manifest says ${l.programId}`);
      if ((info.ifindex ?? 0) === 0) problems.push(`link ${l.pin} is defunct (interface ${l.ifname} was deleted)`);
      else if (info.ifindex !== l.ifindex) problems.push(`link ${l.pin} is on ifindex ${info.ifindex}, the manifest says ${l.ifindex}`);
      let now: number | undefined;
      try {
        now = ifindexOf(l.ifname, netns);
      } catch {
        problems.push(`interface ${l.ifname} is gone`);
      }
      if (now !== undefined && now !== l.ifindex) problems.push(`interface ${l.ifname} is ifindex ${now} now, not ${l.ifindex} (it was re-created)`);
      if (now !== undefined && problems.length === 0) {
        const attached = attachedXdp(now, netns);
        if (attached?.progId !== l.programId) problems.push(`${l.ifname} runs program ${attached === undefined ? 'none' : `${attached.progId} '${attached.name}'`}, not ${l.programId}`);
      }
    } catch (e) {
      problems.push(`link ${l.pin}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (problems.length > 0) {
      link.close();
      throw new PinMismatchError(rec.kind, rec.name, problems);
    }
    return link;
  }

  /** Records an interface the object created (deleted again on detach). */
  addInterface(rec: PinnedObjectRecord, ifname: string, netns: string | undefined): void {
    if (!rec.interfaces.some((i) => i.ifname === ifname && i.netns === (netns ?? null))) rec.interfaces.push({ ifname, netns: netns ?? null });
    this.put(rec);
  }

  /** Forgets a link (its pin is removed). */
  dropLink(rec: PinnedObjectRecord, pin: string): void {
    detachPinnedLink(path.join(this.pinDir, objectFolder(rec.kind, rec.name), pin));
    try {
      unlinkSync(path.join(this.pinDir, objectFolder(rec.kind, rec.name), pin));
    } catch {
      // gone already
    }
    rec.links = rec.links.filter((l) => l.pin !== pin);
    this.put(rec);
  }

  // ------------------------------------------------------------ detaching

  /**
   * Removes one object: detaches its links (also any link pinned in its
   * folder but not yet recorded), deletes the interfaces it created, removes
   * its pins and its record. Idempotent.
   */
  unpin(kind: string, name: string): PinDetachReport {
    const report: PinDetachReport = { links: 0, pins: 0, interfaces: 0 };
    const rec = this.#manifest.objects.find((o) => o.kind === kind && o.name === name);
    this.#removeFolder(path.join(this.pinDir, objectFolder(kind, name)), report);
    for (const i of rec?.interfaces ?? []) {
      try {
        deleteLink(i.ifname, i.netns ?? undefined);
        report.interfaces++;
      } catch {
        // its namespace is gone, and the interface with it
      }
    }
    if (rec !== undefined) this.#forget(kind, name);
    return report;
  }

  /**
   * Removes everything the node pinned: every link detached (the interfaces
   * run no XDP program afterwards), every pin, every interface it created,
   * the manifest and the node's folders. Idempotent.
   */
  detach(): PinDetachReport {
    const total: PinDetachReport = { links: 0, pins: 0, interfaces: 0 };
    for (const o of [...this.#manifest.objects]) {
      const r = this.unpin(o.kind, o.name);
      total.links += r.links;
      total.pins += r.pins;
      total.interfaces += r.interfaces;
    }
    // folders no record named (a crash between mkdir and the manifest write)
    this.#removeFolder(this.pinDir, total);
    if (this.#parent !== undefined) {
      try {
        rmdirSync(this.#parent);
      } catch {
        // other nodes' folders are in it, or it is gone
      }
    }
    rmSync(this.manifestPath, { force: true });
    try {
      rmdirSync(this.stateDir);
    } catch {
      // something else lives there, or it is gone
    }
    this.#manifest = { ...this.#manifest, objects: [] };
    return total;
  }

  /** Detaches every link pinned under `dir`, then removes the pins and the folders. */
  #removeFolder(dir: string, report: PinDetachReport): void {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        this.#removeFolder(p, report);
        continue;
      }
      if (detachPinnedLink(p)) report.links++;
      unlinkSync(p);
      report.pins++;
    }
    rmdirSync(dir);
  }
}
