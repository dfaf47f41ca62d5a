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
 * Transport: gRPC (@grpc/grpc-js) with the protobuf service in proto.ts.
 */
import * as grpc from '@grpc/grpc-js';
import { StateError } from '../types.js';
import { codecs, ESTATE_SERVICE, valueBytes, type Member, type StateItem, type StateValue } from './proto.js';
import type * as P from './proto.js';
import { reducers, type ReduceName, type Reducer, type ReducedValue } from './reduce.js';
import { processClock, type HybridClock } from './clock.js';

export type { StateItem, StateValue, Member } from './proto.js';

export interface EStateNodeOptions {
  /** unique id of the instance in its group */
  id: string;
  /** address to listen on (default 127.0.0.1) */
  host?: string;
  /** port (default 0: any free port) */
  port?: number;
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
    readonly code: grpc.status | undefined,
    detail: string,
  ) {
    super(`E-State peer ${peer} did not answer (${attempts} attempt${attempts === 1 ? '' : 's'}): ${detail}`);
  }
}

const RETRYABLE = new Set<grpc.status>([grpc.status.UNAVAILABLE, grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED, grpc.status.INTERNAL, grpc.status.UNKNOWN]);

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 50,
  'grpc.max_reconnect_backoff_ms': 500,
  'grpc.min_reconnect_backoff_ms': 50,
  'grpc.enable_retries': 0,
  // each node keeps its own connections, also when several live in one process
  'grpc.use_local_subchannel_pool': 1,
};

type Codec<T> = { serialize(v: T): Buffer; deserialize(b: Buffer): T };

function methodDef<Req, Res>(name: string, req: Codec<Req>, res: Codec<Res>): grpc.MethodDefinition<Req, Res> {
  return {
    path: `/${ESTATE_SERVICE}/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: req.serialize,
    requestDeserialize: req.deserialize,
    responseSerialize: res.serialize,
    responseDeserialize: res.deserialize,
    originalName: name,
  };
}

const METHODS: { [M in MethodName]: grpc.MethodDefinition<ReqOf<M>, ResOf<M>> } = {
  Get: methodDef('Get', codecs.GetRequest, codecs.GetReply),
  Fetch: methodDef('Fetch', codecs.FetchRequest, codecs.FetchReply),
  Drop: methodDef('Drop', codecs.DropRequest, codecs.DropReply),
  Join: methodDef('Join', codecs.JoinRequest, codecs.Members),
  Leave: methodDef('Leave', codecs.LeaveRequest, codecs.LeaveReply),
};
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
  readonly #o: Required<Omit<EStateNodeOptions, 'peers' | 'port' | 'clock'>>;
  readonly #server: grpc.Server;
  #address = '';
  #closed = false;
  readonly #items = new Map<string, StateItem>();
  readonly #peers = new Map<string, string>();
  readonly #clients = new Map<string, grpc.Client>();
  readonly #clock: HybridClock;
  readonly #stats: EStateNodeStats = { requests: 0, retries: 0, failures: 0, bytesOut: 0, bytesIn: 0, served: {} };

  private constructor(o: EStateNodeOptions) {
    if (!o.id) throw new StateError('an E-State node needs an id');
    this.id = o.id;
    const { clock, ...rest } = o;
    this.#clock = clock ?? processClock;
    this.#o = { host: '127.0.0.1', timeoutMs: 500, retries: 2, backoffMs: 25, answerDelayMs: 0, ...rest };
    for (const p of o.peers ?? []) if (p.id !== this.id) this.#peers.set(p.id, p.address);
    // (keep channelz on: with 'grpc.enable_channelz': 0, grpc-js 1.14 does not track the
    // server's sessions, and forceShutdown() then leaves open connections serving)
    this.#server = new grpc.Server();
    this.#server.addService(METHODS as unknown as grpc.ServiceDefinition, this.#handlers());
  }

  /** Creates a node and starts serving its peers. */
  static async start(options: EStateNodeOptions): Promise<EStateNode> {
    const n = new EStateNode(options);
    const host = n.#o.host.includes(':') ? `[${n.#o.host}]` : n.#o.host;
    const port = await new Promise<number>((resolve, reject) =>
      n.#server.bindAsync(`${host}:${options.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    ).catch((e: unknown) => {
      n.#server.forceShutdown();
      throw new StateError(`E-State node ${options.id} cannot listen on ${host}:${options.port ?? 0}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
    n.#address = `${host}:${port}`;
    return n;
  }

  /** host:port this node serves on */
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
    if (old !== undefined && old !== m.address) this.#dropClient(old);
    this.#peers.set(m.id, m.address);
  }

  removePeer(id: string): boolean {
    const addr = this.#peers.get(id);
    if (addr === undefined) return false;
    this.#peers.delete(id);
    if (![...this.#peers.values()].includes(addr)) this.#dropClient(addr);
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

  #client(address: string): grpc.Client {
    let c = this.#clients.get(address);
    if (c === undefined) {
      c = new grpc.Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.#clients.set(address, c);
    }
    return c;
  }

  #dropClient(address: string): void {
    this.#clients.get(address)?.close();
    this.#clients.delete(address);
  }

  #once<M extends MethodName>(address: string, method: M, req: ReqOf<M>, timeoutMs: number, signal: AbortSignal | undefined): Promise<ResOf<M>> {
    if (this.#closed) return Promise.reject(new StateError(`E-State node ${this.id} is closed`));
    const def = METHODS[method] as unknown as grpc.MethodDefinition<ReqOf<M>, ResOf<M>>;
    const stats = this.#stats;
    stats.requests++;
    return new Promise<ResOf<M>>((resolve, reject) => {
      const call = this.#client(address).makeUnaryRequest<ReqOf<M>, ResOf<M>>(
        def.path,
        (v) => {
          // stamped when it leaves: the receiver's clock moves past this node's
          const b = def.requestSerialize({ ...v, clock: this.#clock.now() });
          stats.bytesOut += b.length;
          return b;
        },
        (b) => {
          stats.bytesIn += b.length;
          return def.responseDeserialize(b);
        },
        req,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => {
          signal?.removeEventListener('abort', onAbort);
          if (err) return reject(err);
          this.#observe(res as ResOf<M>);
          resolve(res as ResOf<M>);
        },
      );
      const onAbort = (): void => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
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
        const code = (e as grpc.ServiceError).code;
        if (code === undefined || !RETRYABLE.has(code)) break;
      }
    }
    this.#stats.failures++;
    const se = last as Partial<grpc.ServiceError> | undefined;
    const detail = se?.code !== undefined ? `${grpc.status[se.code] ?? se.code}: ${se.details ?? se.message ?? ''}` : String(last);
    throw new PeerUnavailableError(peer, attempts, se?.code, `${method} ${detail}`);
  }

  #handlers(): grpc.UntypedServiceImplementation {
    const serve =
      <Req extends P.Clocked, Res extends P.Clocked>(name: string, fn: (req: Req) => Res): grpc.handleUnaryCall<Req, Res> =>
      (call, cb) => {
        this.#stats.served[name] = (this.#stats.served[name] ?? 0) + 1;
        this.#clock.observe(call.request.clock);
        const answer = (): void => {
          if (this.#closed) return cb({ code: grpc.status.UNAVAILABLE, details: `E-State node ${this.id} closed` });
          try {
            cb(null, { ...fn(call.request), clock: this.#clock.now() });
          } catch (e) {
            cb({ code: grpc.status.INTERNAL, details: e instanceof Error ? e.message : String(e) });
          }
        };
        if (this.#o.answerDelayMs > 0) setTimeout(answer, this.#o.answerDelayMs);
        else answer();
      };
    return {
      Get: serve('Get', (r: ReqOf<'Get'>): ResOf<'Get'> => ({ node: this.id, item: this.#items.get(r.key) })),
      Fetch: serve('Fetch', (r: ReqOf<'Fetch'>): ResOf<'Fetch'> => {
        const out = new Map<string, StateItem>();
        for (const k of r.keys) {
          const i = this.#items.get(k);
          if (i) out.set(k, i);
        }
        if (r.prefix !== undefined) for (const i of this.items(r.prefix)) out.set(i.key, i);
        return { node: this.id, items: [...out.values()] };
      }),
      Drop: serve('Drop', (r: ReqOf<'Drop'>): ResOf<'Drop'> => ({ node: this.id, dropped: r.keys.filter((k) => this.#items.delete(k)).length })),
      Join: serve('Join', (r: ReqOf<'Join'>): ResOf<'Join'> => {
        if (!r.member.id || !r.member.address) throw new Error('a joining member needs an id and an address');
        this.addPeer(r.member);
        return { node: this.id, members: [{ id: this.id, address: this.#address }, ...this.members()] };
      }),
      Leave: serve('Leave', (r: ReqOf<'Leave'>): ResOf<'Leave'> => {
        this.removePeer(r.id);
        return { node: this.id };
      }),
    };
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
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
    this.#server.forceShutdown();
  }

}
