/**
 * E-State (Peuster & Karl, NetSoft 2016): a logically distributed state
 * store living inside the VNF instances. Every instance embeds one
 * EStateNode:
 *
 *  - local view: get / set / del on the instance's own items, each
 *    timestamped (µs, by a hybrid logical clock shared by the process's
 *    nodes and moved past every timestamp a peer sends: clock.ts says what
 *    "written last" means in one process, on one host and across hosts);
 *  - global view: getGlobal(key, reduce) asks every peer for its item of
 *    `key` and reduces the answers (latest, sum, avg, or a custom
 *    function). Each request has a deadline and is retried; peers that do
 *    not answer are listed in the result (partial = true) — the call never
 *    hangs;
 *  - membership: peers join (through any member) and leave;
 *  - handover support: fetch / drop / obtain move a flow's items from the
 *    old instance's local view into the new one's once SHarP says the old
 *    state is final.
 *
 * Transport (transport.ts): the protobuf messages of proto.ts, framed on
 * one connection per peer — a Unix socket for local peers (the default),
 * TCP with mutual TLS for peers elsewhere.
 */
import path from 'node:path';
import type { TlsMaterial } from '../../node/transport/certs.js';
import { StateError } from '../types.js';
import { defaultSocketDir, MAX_SOCKET_PATH_BYTES, PeerCallError, PeerLink, PeerServer, RETRYABLE_STATUSES, type CallStatus, type ServeOptions } from './transport.js';
import { codecs, valueBytes, type Member, type StateItem, type StateValue } from './proto.js';
import type * as P from './proto.js';
import { reducers, type ReduceName, type Reducer, type ReducedValue } from './reduce.js';
import { processClock, type HybridClock } from './clock.js';

export type { StateItem, StateValue, Member } from './proto.js';

export interface EStateNodeOptions {
  /** unique id of the instance in its group */
  id: string;
  /**
   * serve on TCP at this address (with `port`; needs `tls`). Default: a
   * Unix socket, `socketPath` or one in a private folder of the user's
   */
  host?: string;
  /** TCP port (0: any free one; needs `tls`) */
  port?: number;
  /**
   * the node's certificate, key and the group's CA: with host/port the node
   * serves mutual TLS only, and it is what the node shows to peers at TCP
   * addresses (a node certificate: serverAuth and clientAuth)
   */
  tls?: TlsMaterial;
  /** TCP only: a further check of a connecting peer's certificate (see ServeOptions.tcp.admit) */
  admit?: NonNullable<ServeOptions['tcp']>['admit'];
  /** the Unix socket to serve on (default: <tmpdir>/sharpctl-estate-<uid>/<id>-<pid>-<n>.sock) */
  socketPath?: string;
  /** deadline of one request to one peer (default 500 ms) */
  timeoutMs?: number;
  /** further attempts after a failed one (default 2) */
  retries?: number;
  /** pause before the first retry, doubled for each further one (default 25 ms) */
  backoffMs?: number;
  /** peers known from the start */
  peers?: readonly Member[];
  /** fault injection for tests and benchmarks: every answer this node serves is delayed by this much */
  answerDelayMs?: number;
  /**
   * the clock of this node's timestamps (default: processClock, shared by
   * every node of the process — keep it so, else writes made one after the
   * other on two nodes of one process may get timestamps in the wrong order);
   * tests give a node a clock of its own with a skewed wall clock
   */
  clock?: HybridClock;
}

export interface RequestOptions {
  timeoutMs?: number;
  retries?: number;
  signal?: AbortSignal;
}

export interface GlobalOptions extends RequestOptions {
  /** include this node's own item (default true) */
  self?: boolean;
}

export interface GlobalResult<T> {
  key: string;
  /** the reduced value of the items that were collected */
  value: T;
  /** the items collected (instances without an item of the key have none here) */
  items: StateItem[];
  /** instances that answered, this one included */
  answered: string[];
  /** peers that did not answer after every retry */
  missing: string[];
  /** true when some peer is missing: `value` covers only the instances in `answered` */
  partial: boolean;
  /** why each missing peer did not answer */
  errors: Record<string, string>;
  /** how long the whole call took */
  ms: number;
}

export interface EStateNodeStats {
  /** requests this node sent (every attempt) */
  requests: number;
  retries: number;
  /** requests that failed after every retry */
  failures: number;
  bytesOut: number;
  bytesIn: number;
  /** requests this node answered, per method */
  served: Record<string, number>;
}

/** A request to a peer that failed after every retry. */
export class PeerUnavailableError extends StateError {
  override name = 'PeerUnavailableError';
  constructor(
    readonly peer: string,
    readonly attempts: number,
    readonly code: CallStatus | undefined,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`E-State peer ${peer} did not answer (${attempts} attempt${attempts === 1 ? '' : 's'}): ${detail}`, options);
  }
}

type Codec<T> = { serialize(v: T): Buffer; deserialize(b: Buffer): T };
interface MethodDef<Req, Res> {
  /** its number on the wire */
  id: number;
  req: Codec<Req>;
  res: Codec<Res>;
}

const METHODS: { [M in MethodName]: MethodDef<ReqOf<M>, ResOf<M>> } = {
  Get: { id: 1, req: codecs.GetRequest, res: codecs.GetReply },
  Fetch: { id: 2, req: codecs.FetchRequest, res: codecs.FetchReply },
  Drop: { id: 3, req: codecs.DropRequest, res: codecs.DropReply },
  Join: { id: 4, req: codecs.JoinRequest, res: codecs.Members },
  Leave: { id: 5, req: codecs.LeaveRequest, res: codecs.LeaveReply },
};
const METHOD_NAMES: readonly (MethodName | undefined)[] = (() => {
  const a: (MethodName | undefined)[] = [];
  for (const [name, d] of Object.entries(METHODS)) a[d.id] = name as MethodName;
  return a;
})();

/** node ids go into socket file names: keep them to safe characters */
const socketName = (id: string, n: number): string => `${id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40)}-${process.pid}-${n}.sock`;
let socketCounter = 0;

interface Rpc {
  Get: [P.GetRequest, P.GetReply];
  Fetch: [P.FetchRequest, P.FetchReply];
  Drop: [P.DropRequest, P.DropReply];
  Join: [P.JoinRequest, P.Members];
  Leave: [P.LeaveRequest, P.LeaveReply];
}
type MethodName = keyof Rpc;
type ReqOf<M extends MethodName> = Rpc[M][0];
type ResOf<M extends MethodName> = Rpc[M][1];

const sleepAbortable = (ms: number, signal: AbortSignal | undefined): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

export class EStateNode {
  readonly id: string;
  readonly #o: Required<Pick<EStateNodeOptions, 'timeoutMs' | 'retries' | 'backoffMs' | 'answerDelayMs'>>;
  readonly #tls: TlsMaterial | undefined;
  #server: PeerServer | undefined;
  #address = '';
  #closed = false;
  readonly #items = new Map<string, StateItem>();
  readonly #peers = new Map<string, string>();
  /** one connection per peer address, made on first use and again after it fails */
  readonly #links = new Map<string, PeerLink>();
  readonly #clock: HybridClock;
  readonly #stats: EStateNodeStats = { requests: 0, retries: 0, failures: 0, bytesOut: 0, bytesIn: 0, served: {} };

  private constructor(o: EStateNodeOptions) {
    if (!o.id) throw new StateError('an E-State node needs an id');
    this.id = o.id;
    this.#clock = o.clock ?? processClock;
    this.#tls = o.tls;
    const num = (field: 'timeoutMs' | 'retries' | 'backoffMs' | 'answerDelayMs', v: number | undefined, dflt: number, min: number, max: number): number => {
      if (v === undefined) return dflt;
      if (!Number.isFinite(v) || v < min || v > max) throw new StateError(`E-State node ${o.id}: ${field} must be a number from ${min} to ${max} (got ${v})`);
      return v;
    };
    this.#o = {
      timeoutMs: num('timeoutMs', o.timeoutMs, 500, 1, 3_600_000),
      retries: num('retries', o.retries, 2, 0, 100),
      backoffMs: num('backoffMs', o.backoffMs, 25, 0, 60_000),
      answerDelayMs: num('answerDelayMs', o.answerDelayMs, 0, 0, 3_600_000),
    };
    for (const p of o.peers ?? []) if (p.id !== this.id) this.#peers.set(p.id, p.address);
  }

  /** Creates a node and starts serving its peers (a Unix socket unless host/port are given, then TCP with mutual TLS). */
  static async start(options: EStateNodeOptions): Promise<EStateNode> {
    const n = new EStateNode(options);
    const tcp = options.host !== undefined || options.port !== undefined;
    if (tcp && options.socketPath !== undefined) throw new StateError(`E-State node ${options.id}: give socketPath or host/port, not both`);
    if (tcp && options.tls === undefined) {
      throw new StateError(`E-State node ${options.id}: serving on TCP (host/port) needs tls (mutual TLS: the node's certificate, key and the group's CA); leave host and port out to serve on a Unix socket`);
    }
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? 0;
    if (tcp && !(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new StateError(`E-State node ${options.id}: port must be an integer from 0 to 65535 (got ${port})`);
    let unixPath: string | undefined;
    if (!tcp) {
      unixPath = options.socketPath ?? path.join(defaultSocketDir(), socketName(options.id, ++socketCounter));
      if (Buffer.byteLength(unixPath) > MAX_SOCKET_PATH_BYTES) throw new StateError(`E-State node ${options.id}: socketPath '${unixPath}' is ${Buffer.byteLength(unixPath)} bytes; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}`);
    }
    try {
      n.#server = await PeerServer.listen(tcp ? { tcp: { host, port, tls: options.tls!, ...(options.admit === undefined ? {} : { admit: options.admit }) } } : { unixPath: unixPath! }, (method, body) => n.#serve(method, body));
    } catch (e) {
      throw new StateError(`E-State node ${options.id} ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    n.#address = n.#server.address;
    return n;
  }

  /** where this node serves: unix:/path.sock, or host:port (mutual TLS) */
  get address(): string {
    return this.#address;
  }

  get closed(): boolean {
    return this.#closed;
  }

  // ------------------------------------------------------------------ local view

  get(key: string): StateValue | undefined {
    return this.#items.get(key)?.value;
  }

  getItem(key: string): StateItem | undefined {
    return this.#items.get(key);
  }

  has(key: string): boolean {
    return this.#items.has(key);
  }

  set(key: string, value: StateValue): StateItem {
    const item: StateItem = { key, value, ts: this.#clock.tick(), owner: this.id };
    this.#items.set(key, item);
    return item;
  }

  /**
   * Writes several items at one instant: like set() for each, in order,
   * with one reading of the clock for all (their timestamps are
   * consecutive). The fast path for bulk updates; returns how many.
   */
  setMany(entries: readonly (readonly [string, StateValue])[]): number {
    let ts = this.#clock.tickMany(entries.length);
    const items = this.#items;
    const owner = this.id;
    // an index loop: iterator destructuring costs ~20 % here
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      items.set(e[0], { key: e[0], value: e[1], ts: ts++, owner });
    }
    return entries.length;
  }

  del(key: string): boolean {
    return this.#items.delete(key);
  }

  keys(prefix = ''): string[] {
    return [...this.#items.keys()].filter((k) => k.startsWith(prefix));
  }

  items(prefix = ''): StateItem[] {
    return [...this.#items.values()].filter((i) => i.key.startsWith(prefix));
  }

  get size(): number {
    return this.#items.size;
  }

  /**
   * Installs items that another instance held (a handover): they become
   * this instance's own, keeping their timestamps; this node's clock moves
   * past them so that its next writes are later.
   */
  adopt(items: readonly StateItem[]): void {
    for (const i of items) {
      this.#clock.observe(i.ts);
      this.#items.set(i.key, { key: i.key, value: i.value, ts: i.ts, owner: this.id });
    }
  }

  // ------------------------------------------------------------------ global view

  /**
   * Asks every peer (and this node) for its item of `key`, in parallel, and
   * reduces what comes back. Peers that fail every attempt are reported in
   * `missing`; the call ends after at most (retries + 1) × (timeout +
   * backoff) whatever the peers do.
   */
  async getGlobal<R extends ReduceName | Reducer<unknown>>(key: string, reduce: R, options: GlobalOptions = {}): Promise<GlobalResult<ReducedValue<R>>> {
    const t0 = performance.now();
    const fn: Reducer<unknown> = typeof reduce === 'function' ? reduce : reducers[reduce as ReduceName];
    if (fn === undefined) throw new StateError(`unknown reduce function '${String(reduce)}' (latest, sum, avg, or a function)`);
    const items: StateItem[] = [];
    const answered: string[] = [];
    const missing: string[] = [];
    const errors: Record<string, string> = {};
    if (options.self !== false) {
      answered.push(this.id);
      const own = this.#items.get(key);
      if (own) items.push(own);
    }
    const peers = [...this.#peers.entries()];
    const answers = await Promise.all(
      peers.map(([id, address]) =>
        this.#call(id, address, 'Get', { key, from: this.id }, options).then(
          (r) => ({ id, r, err: undefined }),
          (err: unknown) => ({ id, r: undefined, err }),
        ),
      ),
    );
    options.signal?.throwIfAborted();
    for (const a of answers) {
      if (a.r !== undefined) {
        answered.push(a.id);
        if (a.r.item) items.push(a.r.item);
      } else {
        missing.push(a.id);
        errors[a.id] = a.err instanceof Error ? a.err.message : String(a.err);
      }
    }
    const value = fn(items) as ReducedValue<R>;
    return { key, value, items, answered, missing, partial: missing.length > 0, errors, ms: performance.now() - t0 };
  }

  // ------------------------------------------------------------------ membership

  /** The peers this node knows (itself excluded). */
  members(): Member[] {
    return [...this.#peers.entries()].map(([id, address]) => ({ id, address }));
  }

  addPeer(m: Member): void {
    if (m.id === this.id) return;
    const old = this.#peers.get(m.id);
    if (old !== undefined && old !== m.address) this.#dropLink(old);
    this.#peers.set(m.id, m.address);
  }

  removePeer(id: string): boolean {
    const addr = this.#peers.get(id);
    if (addr === undefined) return false;
    this.#peers.delete(id);
    if (![...this.#peers.values()].includes(addr)) this.#dropLink(addr);
    return true;
  }

  /**
   * Joins the group `seed` (host:port of any member) belongs to: learns
   * its members and announces itself to each of them. Rejects if the seed
   * does not answer; members that do not answer the announcement are
   * returned in `unreached` (they learn about this node when they next
   * join, or by an explicit addPeer).
   */
  async join(seed: string, options: RequestOptions = {}): Promise<{ members: Member[]; unreached: string[] }> {
    const me = { id: this.id, address: this.#address };
    const r = await this.#call(seed, seed, 'Join', { member: me }, options);
    for (const m of r.members) this.addPeer(m);
    const others = r.members.filter((m) => m.id !== this.id && m.id !== r.node);
    const announced = await Promise.all(
      others.map((m) =>
        this.#call(m.id, m.address, 'Join', { member: me }, options).then(
          (x) => {
            for (const mm of x.members) this.addPeer(mm);
            return undefined;
          },
          () => m.id,
        ),
      ),
    );
    return { members: this.members(), unreached: announced.filter((x): x is string => x !== undefined) };
  }

  /** Tells every peer this node leaves the group, then forgets them. */
  async leave(options: RequestOptions = {}): Promise<{ told: string[]; unreached: string[] }> {
    const peers = [...this.#peers.entries()];
    const res = await Promise.all(
      peers.map(([id, address]) =>
        this.#call(id, address, 'Leave', { id: this.id }, { retries: 0, ...options }).then(
          () => ({ id, ok: true }),
          () => ({ id, ok: false }),
        ),
      ),
    );
    for (const [id] of peers) this.removePeer(id);
    return { told: res.filter((r) => r.ok).map((r) => r.id), unreached: res.filter((r) => !r.ok).map((r) => r.id) };
  }

  // ------------------------------------------------------------------ handover support

  #peerAddress(peer: string): string {
    const a = this.#peers.get(peer);
    if (a === undefined) throw new StateError(`E-State node ${this.id} has no peer '${peer}' (peers: ${[...this.#peers.keys()].join(', ') || 'none'})`);
    return a;
  }

  /** Copies items of a peer's local view: the listed keys and/or every key with `prefix`. Rejects if the peer does not answer. */
  async fetch(peer: string, select: { keys?: readonly string[]; prefix?: string }, options: RequestOptions = {}): Promise<StateItem[]> {
    const r = await this.#call(peer, this.#peerAddress(peer), 'Fetch', { keys: [...(select.keys ?? [])], prefix: select.prefix, from: this.id }, options);
    return r.items;
  }

  /** Deletes items from a peer's local view; resolves with how many it had. */
  async drop(peer: string, keys: readonly string[], options: RequestOptions = {}): Promise<number> {
    if (keys.length === 0) return 0;
    const r = await this.#call(peer, this.#peerAddress(peer), 'Drop', { keys: [...keys], from: this.id }, options);
    return r.dropped;
  }

  /**
   * Moves items from a peer's local view into this one: fetch, adopt, then
   * drop at the peer. With `keys`, every key must be there (else nothing is
   * adopted and the call rejects).
   */
  async obtain(peer: string, select: { keys?: readonly string[]; prefix?: string }, options: RequestOptions = {}): Promise<StateItem[]> {
    const items = await this.fetch(peer, select, options);
    if (select.keys !== undefined && select.prefix === undefined) {
      const got = new Set(items.map((i) => i.key));
      const absent = select.keys.filter((k) => !got.has(k));
      if (absent.length > 0) throw new StateError(`E-State peer ${peer} has no item of ${absent.length} requested key(s), e.g. '${absent[0]}'`);
    }
    options.signal?.throwIfAborted();
    this.adopt(items);
    await this.drop(
      peer,
      items.map((i) => i.key),
      options,
    );
    return items;
  }

  // ------------------------------------------------------------------ transport

  stats(): EStateNodeStats {
    return { ...this.#stats, served: { ...this.#stats.served } };
  }

  #link(address: string): PeerLink {
    let l = this.#links.get(address);
    if (l === undefined) {
      l = new PeerLink(address, this.#tls, (dead) => {
        if (this.#links.get(address) === dead) this.#links.delete(address);
      });
      this.#links.set(address, l);
    }
    return l;
  }

  #dropLink(address: string): void {
    this.#links.get(address)?.close();
    this.#links.delete(address);
  }

  async #once<M extends MethodName>(address: string, method: M, req: ReqOf<M>, timeoutMs: number, signal: AbortSignal | undefined): Promise<ResOf<M>> {
    if (this.#closed) throw new StateError(`E-State node ${this.id} is closed`);
    const def = METHODS[method] as unknown as MethodDef<ReqOf<M>, ResOf<M>>;
    this.#stats.requests++;
    // stamped when it leaves: the receiver's clock moves past this node's
    const out = def.req.serialize({ ...req, clock: this.#clock.now() });
    this.#stats.bytesOut += out.length;
    const b = await this.#link(address).call(def.id, out, timeoutMs, signal);
    this.#stats.bytesIn += b.length;
    let res: ResOf<M>;
    try {
      res = def.res.deserialize(b);
    } catch (e) {
      throw new PeerCallError('INTERNAL', `${address} answered ${method} with a message that does not decode: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    this.#observe(res);
    return res;
  }

  /** Moves this node's clock past the timestamps a peer's message carries (its clock, its items'). */
  #observe(m: P.Clocked & { item?: StateItem | undefined; items?: StateItem[] }): void {
    this.#clock.observe(m.clock);
    if (m.item !== undefined) this.#clock.observe(m.item.ts);
    for (const i of m.items ?? []) this.#clock.observe(i.ts);
  }

  /** One request with deadline and retries; rejects with PeerUnavailableError (or the signal's reason). */
  async #call<M extends MethodName>(peer: string, address: string, method: M, req: ReqOf<M>, options: RequestOptions): Promise<ResOf<M>> {
    const timeoutMs = options.timeoutMs ?? this.#o.timeoutMs;
    const attempts = 1 + Math.max(0, options.retries ?? this.#o.retries);
    let last: unknown;
    for (let a = 0; a < attempts; a++) {
      options.signal?.throwIfAborted();
      if (a > 0) {
        this.#stats.retries++;
        await sleepAbortable(this.#o.backoffMs * 2 ** (a - 1), options.signal);
      }
      try {
        return await this.#once(address, method, req, timeoutMs, options.signal);
      } catch (e) {
        options.signal?.throwIfAborted();
        last = e;
        if (!(e instanceof PeerCallError) || !RETRYABLE_STATUSES.has(e.status)) break;
      }
    }
    this.#stats.failures++;
    const code = last instanceof PeerCallError ? last.status : undefined;
    const detail = last instanceof Error ? last.message : String(last);
    throw new PeerUnavailableError(peer, attempts, code, `${method} ${detail}`, { cause: last });
  }

  /** Answers one peer's request (the transport's handler). */
  #serve(methodId: number, body: Buffer): Buffer | Promise<Buffer> {
    const name = METHOD_NAMES[methodId];
    if (name === undefined) throw new PeerCallError('UNIMPLEMENTED', `E-State node ${this.id} has no method ${methodId}`);
    const def = METHODS[name] as unknown as MethodDef<P.Clocked, P.Clocked>;
    let req: P.Clocked;
    try {
      req = def.req.deserialize(body);
    } catch (e) {
      throw new PeerCallError('INVALID_ARGUMENT', `${name} request does not decode: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    this.#stats.served[name] = (this.#stats.served[name] ?? 0) + 1;
    this.#clock.observe(req.clock);
    const answer = (): Buffer => {
      if (this.#closed) throw new PeerCallError('UNAVAILABLE', `E-State node ${this.id} closed`);
      return def.res.serialize({ ...(this.#answer(name, req) as P.Clocked), clock: this.#clock.now() });
    };
    if (this.#o.answerDelayMs > 0) return new Promise((resolve) => setTimeout(resolve, this.#o.answerDelayMs)).then(answer);
    return answer();
  }

  #answer(name: MethodName, request: P.Clocked): ResOf<MethodName> {
    switch (name) {
      case 'Get': {
        const r = request as ReqOf<'Get'>;
        return { node: this.id, item: this.#items.get(r.key) };
      }
      case 'Fetch': {
        const r = request as ReqOf<'Fetch'>;
        const out = new Map<string, StateItem>();
        for (const k of r.keys) {
          const i = this.#items.get(k);
          if (i) out.set(k, i);
        }
        if (r.prefix !== undefined) for (const i of this.items(r.prefix)) out.set(i.key, i);
        return { node: this.id, items: [...out.values()] };
      }
      case 'Drop': {
        const r = request as ReqOf<'Drop'>;
        return { node: this.id, dropped: r.keys.filter((k) => this.#items.delete(k)).length };
      }
      case 'Join': {
        const r = request as ReqOf<'Join'>;
        if (!r.member.id || !r.member.address) throw new PeerCallError('INVALID_ARGUMENT', 'a joining member needs an id and an address');
        this.addPeer(r.member);
        return { node: this.id, members: [{ id: this.id, address: this.#address }, ...this.members()] };
      }
      case 'Leave': {
        const r = request as ReqOf<'Leave'>;
        this.removePeer(r.id);
        return { node: this.id };
      }
    }
  }

  /** Bytes of the local view (values only), for statistics. */
  localBytes(prefix = ''): number {
    return this.items(prefix).reduce((a, i) => a + valueBytes(i.value), 0);
  }

  /**
   * Stops serving at once and closes every connection; requests in flight
   * are not answered (as if the instance died). Does not tell the peers:
   * call leave() first for that.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const l of this.#links.values()) l.close();
    this.#links.clear();
    this.#server?.close();
  }

}
