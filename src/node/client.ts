/**
 * The controller's side of sharp.node.v1: one NodeClient per node, which is
 * the switch control, agent control and VNF state of whatever that node
 * runs; and NodeDeployment, the engine's Deployment over several nodes
 * (switches and instances found by name on the node that runs them).
 *
 * The engine's synchronous questions (switches, ports, rules) are answered
 * from what the node said at connect time and from this client's own writes:
 * the node is the only other writer of its rules, and it writes none by
 * itself.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AgentUnavailableError,
  DataPlaneError,
  RuleError,
  type AgentControl,
  type AgentHandoverStatus,
  type AfterWrite,
  type AgentInstanceInfo,
  type ControllerChannel,
  type ControllerPacketPath,
  type Counter,
  type Deployment,
  type DivertedFrame,
  type FlowKey,
  type FlowSelection,
  type FlowStateEntry,
  type HandoverMarkCounters,
  type InterfaceDrops,
  type PortCounters,
  type SentTowards,
  type ReleaseOptions,
  type ReleaseResult,
  MAX_RELEASE_FRAMES,
  type Rule,
  type RuleAction,
  type RuleActionUpdate,
  type StateTransferOptions,
  type StateTransferResult,
  type SwitchControl,
  type VnfStateStore,
} from '../dataplane/types.js';
import {
  BATCHABLE,
  MAX_BATCH_CALLS,
  NODE_SERVICE,
  actionToWire,
  counterFromWire,
  entryFromWire,
  entryToWire,
  flowFromWire,
  flowToWire,
  healthFromWire,
  DEADLINE_METADATA,
  marksFromWire,
  matchToWire,
  portCountersFromWire,
  ruleFromWire,
  sentTowardsFromWire,
  statusFromWire,
  type NodeHealth,
  type NodeMethod,
  type Wire,
  type StagingStore,
} from './api.js';
import type { NodeChannel } from './transport/client.js';
import { describeTarget, FramedLink, type FramedTarget } from './transport/frames.js';
import { callDeadline } from '../util/call-deadline.js';
import { allEnded } from '../util/mutex.js';
import { captureRequestToWire, countsFromWire, frameFromWire, type CaptureSinks } from './capture-service.js';
import { divertedFrameFromWire, SEND_LIMITS } from './divert-service.js';
import type { CaptureRequest } from '../capture/filter.js';
import type { CertIdentity } from './transport/identity.js';
import type { StoreStagedState } from '../state/types.js';

/** A node that could not be reached or refused a request; carries the gRPC status. */
export class NodeCallError extends DataPlaneError {
  override name = 'NodeCallError';
  /** no answer came (deadline, unavailable): the node may or may not have acted (dataplane/types.ts unanswered) */
  get unanswered(): boolean {
    return this.code === grpc.status.DEADLINE_EXCEEDED || this.code === grpc.status.UNAVAILABLE;
  }
  constructor(
    readonly node: string,
    readonly method: string,
    readonly code: grpc.status,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A short call waiting for the turn's Batch. */
interface PendingCall {
  method: NodeMethod;
  req: Wire;
  deadline: number;
  t0: number;
  resolve: (w: Wire) => void;
  reject: (e: unknown) => void;
}

function deadlineMetadata(deadline: number): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(DEADLINE_METADATA, String(deadline));
  return md;
}

export interface NodeClientOptions {
  /** how the node is reached: its Unix socket, or TCP with mutual TLS (transport/client.ts) */
  channel: NodeChannel;
  /** deadline of every call but Release (default CALL_DEADLINE_MS) */
  callTimeoutMs?: number;
  /** read the node's rule table at connect (default true; a peer node pushing state may only call Health and ImportState) */
  readRules?: boolean;
  /** where other nodes reach this one for state transfers (default: the channel's own socket or address) */
  statePeer?: StatePeerVia;
  /**
   * Make the unary calls on the node's framed channel where its Health
   * offers one (default true; SHARP_NODE_FRAMES=0 in the environment turns
   * it off): the same messages at about a quarter of gRPC's CPU per call.
   * The streams stay on gRPC, and so does the first Health unless
   * `framesHint` says where the channel is.
   */
  frames?: boolean;
  /**
   * Where the node's framed channel is, when already known (a peer's, as
   * the controller passes it): the first call, Health, goes there instead
   * of opening a gRPC connection first.
   */
  framesHint?: PeerFrames;
}

/** How one node reaches another's API for a state transfer: its Unix socket (same host) or its mutual-TLS address. */
/** A P4 switch's ports as its node reads them: receive counts, and input-ring drops where the node knows BMv2's pid. */
export interface SwitchPortInputs {
  arrivals: Map<string, bigint>;
  dropped?: Map<string, bigint>;
}

export type StatePeerVia = { unix: string } | { address: string };

/** Where a node's framed channel is, as its Health says: the socket, and the port on the host it is reached at. */
export type PeerFrames = { unix?: string; port?: number };

/** Where a state transfer went, as the sending node reports it. */
export interface NodeTransferResult extends StateTransferResult {
  /** ImportState calls the sending node made to the peer */
  calls: number;
}

/**
 * Every call has a deadline: 10 s (CALL_DEADLINE_MS), so a hung or cut-off
 * node costs at most that per call. Not shorter: on a loaded host a healthy
 * node's answer can take seconds (3 s deadlines failed RuleCounters on a
 * 2-core box at load 17), and a call that fails there aborts a handover.
 * Release ends within the timeout it is given: the node is told to wait
 * RELEASE_MARGIN_MS less (at most half), the rest is for its answer.
 */
export const CALL_DEADLINE_MS = 10_000;
export const RELEASE_MARGIN_MS = 2_000;

const ServiceClient = grpc.makeGenericClientConstructor(NODE_SERVICE, 'sharp.node.v1.Node');

export class NodeClient implements SwitchControl, AgentControl, VnfStateStore {
  readonly #client: grpc.Client;
  readonly #channel: NodeChannel;
  readonly #timeoutMs: number;
  #health!: NodeHealth;
  readonly #rules = new Map<number, Rule>();
  readonly #readRules: boolean;
  readonly #calls = new Map<NodeMethod, number>();
  readonly #callMs = new Map<NodeMethod, number>();
  readonly #batched = new Map<NodeMethod, number>();
  readonly target: string;
  /** where other nodes reach this one for state transfers */
  readonly statePeer: StatePeerVia;

  private constructor(o: NodeClientOptions) {
    this.target = o.channel.target;
    this.#channel = o.channel;
    this.#client = o.channel.client(ServiceClient);
    this.#timeoutMs = o.callTimeoutMs ?? CALL_DEADLINE_MS;
    this.#readRules = o.readRules ?? true;
    this.#framesWanted = o.frames ?? process.env['SHARP_NODE_FRAMES'] !== '0';
    if (o.framesHint !== undefined) this.#framesTarget = this.#framesTargetOf({ frames: o.framesHint });
    const ep = o.channel.endpoint;
    this.statePeer = o.statePeer ?? (ep.transport === 'unix' ? { unix: ep.path } : { address: ep.address });
    this.#statePeerIsChannel = o.statePeer === undefined;
  }

  /** calls this client made, per method (what crossed from this process to the node: a Batch counts once, as Batch) */
  get calls(): ReadonlyMap<NodeMethod, number> {
    return this.#calls;
  }

  /** calls that went inside a Batch, per method */
  get batched(): ReadonlyMap<NodeMethod, number> {
    return this.#batched;
  }

  /** wall time of this client's calls, per method, in ms (from the call to its answer) */
  get callMs(): ReadonlyMap<NodeMethod, number> {
    return this.#callMs;
  }

  /** Connects, asks the node what it runs and which rules it holds. */
  static async connect(o: NodeClientOptions): Promise<NodeClient> {
    const c = new NodeClient(o);
    try {
      await c.refresh();
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  /** Re-reads the node's health and rule table (after a reconnect, or a restart of either side). */
  async refresh(): Promise<NodeHealth> {
    this.#health = healthFromWire(await this.#call('Health', {}));
    const target = this.#framesTargetOf(this.#health);
    if (target === undefined || this.#framesTarget === undefined || describeTarget(target) !== describeTarget(this.#framesTarget)) {
      this.#framed?.close();
      this.#framed = undefined;
    }
    this.#framesTarget = target;
    this.#framesNote = undefined;
    // the connection (and its TLS handshake) now, not in the first call of a handover
    this.#framedLink();
    this.#rules.clear();
    if (this.#readRules && this.#health.switches.length > 0) for (const r of ((await this.#call('ListRules', {}))['rules'] as Wire[]) ?? []) this.#rules.set(Number(r['id']), ruleFromWire(r));
    return this.#health;
  }

  /**
   * Where other nodes find this node's framed channel: what its Health
   * says, when they reach it where this client does (statePeer is the
   * channel's own socket or address); undefined otherwise, and they learn
   * it from Health at the address they are given.
   */
  get statePeerFrames(): PeerFrames | undefined {
    return this.#statePeerIsChannel ? this.#health?.frames : undefined;
  }

  /** how this client reaches the node */
  get channel(): NodeChannel {
    return this.#channel;
  }

  /** the node's certificate as the TLS handshake verified it (undefined on a Unix socket) */
  get serverIdentity(): CertIdentity | undefined {
    return this.#channel.verifiedServer ?? this.#framed?.verifiedServer;
  }

  get health(): NodeHealth {
    return this.#health;
  }

  get name(): string {
    return this.#health?.node ?? this.target;
  }

  /**
   * `timeoutMs` given: that deadline; otherwise the client's, bounded by the
   * caller's (util/call-deadline.ts). Short calls (BATCHABLE) made in the
   * same turn of the event loop go to the node together, as one Batch.
   */
  #call(method: NodeMethod, req: Wire, timeoutMs?: number): Promise<Wire> {
    const deadline = timeoutMs === undefined ? callDeadline(this.#timeoutMs) : Date.now() + timeoutMs;
    if (this.#batching && BATCHABLE.has(method) && !this.#alone.has(method))
      return new Promise<Wire>((resolve, reject) => this.#enqueue({ method, req, deadline, t0: performance.now(), resolve, reject }));
    return this.#unary(method, req, deadline);
  }

  #unary(method: NodeMethod, req: Wire, deadline: number, t0 = performance.now()): Promise<Wire> {
    const def = NODE_SERVICE[method]!;
    this.#calls.set(method, (this.#calls.get(method) ?? 0) + 1);
    const took = (): void => void this.#callMs.set(method, (this.#callMs.get(method) ?? 0) + performance.now() - t0);
    const link = this.#framedLink();
    if (link !== undefined)
      return link.call(method, (def.requestSerialize as (v: Wire) => Buffer)(req), deadline).then(
        (b) => {
          took();
          return def.responseDeserialize(b) as Wire;
        },
        (e: grpc.ServiceError & { notSent?: boolean }) => {
          // the channel could not be reached: the request never left, so gRPC may carry it (and the channel is looked up again)
          if (e.notSent === true) {
            this.#framesTarget = undefined;
            this.#framesNote = `the framed channel at ${link.describe} could not be reached (${e.details}): gRPC until the node's Health names one that answers`;
            this.#relearnFrames(link.describe);
            return this.#grpcUnary(method, req, deadline, t0);
          }
          took();
          throw this.#error(method, e);
        },
      );
    return this.#grpcUnary(method, req, deadline, t0);
  }

  #grpcUnary(method: NodeMethod, req: Wire, deadline: number, t0: number): Promise<Wire> {
    const def = NODE_SERVICE[method]!;
    return new Promise<Wire>((resolve, reject) => {
      this.#client.makeUnaryRequest<Wire, Wire>(
        def.path,
        def.requestSerialize as (v: Wire) => Buffer,
        def.responseDeserialize as (b: Buffer) => Wire,
        req,
        deadlineMetadata(deadline),
        { deadline },
        (err, res) => {
          this.#callMs.set(method, (this.#callMs.get(method) ?? 0) + performance.now() - t0);
          if (err) reject(this.#error(method, err));
          else resolve(res ?? {});
        },
      );
    });
  }

  /** where the node's framed channel is (from its Health), undefined: gRPC only */
  #framesTarget: FramedTarget | undefined;
  #framed: FramedLink | undefined;
  #framesNote: string | undefined;
  readonly #framesWanted: boolean;
  readonly #statePeerIsChannel: boolean;

  #relearning = false;

  /**
   * Asks the node's Health (over gRPC) where its framed channel is now: a
   * restarted node listens at another free port. Calls go over gRPC
   * meanwhile, and for good where Health names the place that failed.
   */
  #relearnFrames(failed: string): void {
    if (this.#relearning) return;
    this.#relearning = true;
    void this.#grpcUnary('Health', {}, Date.now() + this.#timeoutMs, performance.now())
      .then((w) => {
        const target = this.#framesTargetOf(healthFromWire(w));
        // the same place again would fail the same way: it stays gRPC until a refresh
        if (target === undefined || describeTarget(target) === failed) return;
        this.#framed?.close();
        this.#framed = undefined;
        this.#framesTarget = target;
        this.#framesNote = undefined;
      })
      .catch(() => undefined)
      .finally(() => (this.#relearning = false));
  }

  /** The link to the framed channel (a new one after the last died), or undefined where there is none. */
  #framedLink(): FramedLink | undefined {
    if (this.#framesTarget === undefined) return undefined;
    if (this.#framed === undefined || this.#framed.dead) this.#framed = new FramedLink(this.#framesTarget);
    return this.#framed;
  }

  /** Where this node's framed channel is reached, from its Health: the same socket folder, or the same host over the same TLS. */
  #framesTargetOf(h: Pick<NodeHealth, 'frames'>): FramedTarget | undefined {
    if (!this.#framesWanted || h.frames === undefined) return undefined;
    const ep = this.#channel.endpoint;
    if (ep.transport === 'unix') return h.frames.unix === undefined ? undefined : { unix: h.frames.unix };
    if (h.frames.port === undefined) return undefined;
    const host = ep.address.slice(0, ep.address.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
    return { host, port: h.frames.port, node: ep.node, tls: ep.tls };
  }

  /** 'frames' while calls go on the node's framed channel, else 'grpc' (and, in `transportNote`, why) */
  get transport(): 'frames' | 'grpc' {
    return this.#framesTarget === undefined ? 'grpc' : 'frames';
  }

  /** why calls go over gRPC: the node offers no framed channel, it was turned off, or it could not be reached */
  get transportNote(): string | undefined {
    if (this.#framesTarget !== undefined) return undefined;
    if (!this.#framesWanted) return 'the framed channel is turned off for this client';
    return this.#framesNote ?? (this.#health?.frames === undefined ? `node ${this.name} offers no framed channel` : undefined);
  }

  /** false once the node answered Batch UNIMPLEMENTED (an older node): every call alone from then on */
  #batching = true;
  /** short calls made in this turn of the event loop, not sent yet */
  #pending: PendingCall[] = [];
  /** methods this node's Batch refused to carry (a node older than the method): each alone */
  readonly #alone = new Set<NodeMethod>();

  #enqueue(c: PendingCall): void {
    if (this.#pending.length === 0) setImmediate(() => this.#flush());
    this.#pending.push(c);
  }

  /** Sends the calls made in the last turn: one alone as itself, several as one Batch (in the order they were made). */
  #flush(): void {
    const calls = this.#pending.splice(0, MAX_BATCH_CALLS);
    if (this.#pending.length > 0) setImmediate(() => this.#flush());
    const settle = (c: PendingCall, p: Promise<Wire>): void => void p.then(c.resolve, c.reject);
    if (calls.length === 1 || !this.#batching) {
      for (const c of calls) settle(c, this.#unary(c.method, c.req, c.deadline, c.t0));
      return;
    }
    // the batch ends at its earliest call's deadline: no call waits longer than it would alone
    const deadline = Math.min(...calls.map((c) => c.deadline));
    const def = NODE_SERVICE['Batch']!;
    const wire = calls.map((c) => ({ method: c.method, request: (NODE_SERVICE[c.method]!.requestSerialize as (v: Wire) => Buffer)(c.req), deadline_ms: c.deadline }));
    this.#unary('Batch', { calls: wire }, deadline).then(
      (reply) => {
        const results = (reply['results'] as Wire[] | undefined) ?? [];
        calls.forEach((c, i) => {
          this.#batched.set(c.method, (this.#batched.get(c.method) ?? 0) + 1);
          this.#callMs.set(c.method, (this.#callMs.get(c.method) ?? 0) + performance.now() - c.t0);
          const r = results[i];
          const code = Number(r?.['code'] ?? grpc.status.INTERNAL);
          if (r !== undefined && code === grpc.status.OK) return c.resolve(NODE_SERVICE[c.method]!.responseDeserialize(r['reply'] as Buffer) as Wire);
          // the status the call would have had alone
          const md = new grpc.Metadata();
          if (r !== undefined && String(r['error'] ?? '') !== '') md.set('sharp-error', String(r['error']));
          const details = r === undefined ? `the node's Batch reply has no result for call ${i}` : String(r['details'] ?? '');
          c.reject(this.#error(c.method, Object.assign(new Error(details), { code, details, metadata: md }) as grpc.ServiceError));
        });
      },
      (e: unknown) => {
        if (e instanceof NodeCallError && e.code === grpc.status.UNIMPLEMENTED) {
          this.#batching = false;
          for (const c of calls) settle(c, this.#unary(c.method, c.req, c.deadline, c.t0));
          return;
        }
        const refused = e instanceof NodeCallError && e.code === grpc.status.INVALID_ARGUMENT ? /calls\.\d+\.method '([^']*)': not one a batch may carry/.exec(e.message)?.[1] : undefined;
        if (refused !== undefined && !this.#alone.has(refused as NodeMethod) && calls.some((c) => c.method === refused)) {
          // the whole batch was refused, nothing run: the calls again, that method alone from now on
          this.#alone.add(refused as NodeMethod);
          for (const c of calls) {
            if (this.#alone.has(c.method)) settle(c, this.#unary(c.method, c.req, c.deadline, c.t0));
            else this.#enqueue(c);
          }
          return;
        }
        // no answer to the batch is no answer to each of its calls
        for (const c of calls) c.reject(e instanceof NodeCallError ? new NodeCallError(e.node, c.method, e.code, e.message.replace(/\bBatch\b/, c.method), { cause: e }) : e);
      },
    );
  }

  #error(method: string, err: grpc.ServiceError): Error {
    const conn = this.#channel.connectionError(err);
    if (conn !== undefined) return conn;
    const kind = err.metadata?.get('sharp-error')[0];
    const who = this.#health?.node ?? this.target;
    if (kind === 'AgentUnavailableError') {
      const m = /^instance (\S+) has no working SHarP agent: (.*)$/.exec(err.details);
      if (m) return new AgentUnavailableError(m[1]!, m[2]!, { cause: err });
    }
    if (kind === 'RuleError') return new RuleError(err.details, { cause: err });
    const what = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED ? `node ${who} (${this.target}) did not answer ${method}` : `node ${who}: ${method}`;
    return new NodeCallError(who, method, err.code, `${what}: ${err.details || grpc.status[err.code]}`, { cause: err });
  }

  close(): void {
    this.#framed?.close();
    this.#client.close();
  }

  // ---------------------------------------------------------------- switch control

  get quiescenceMs(): number {
    return this.#health.quiescenceMs;
  }

  switches(): string[] {
    return this.#health.switches.map((s) => s.name);
  }

  portTowards(sw: string, instance: string): string | undefined {
    return this.#health.switches.find((s) => s.name === sw)?.ports.find((p) => p.instance === instance)?.name;
  }

  async addRule(r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> {
    const rule = ruleFromWire(await this.#call('AddRule', { id: r.id ?? 0, switch: r.switch, match: matchToWire(r.match), action: actionToWire(r.action) }));
    this.#rules.set(rule.id, rule);
    return rule;
  }

  async deleteRule(id: number): Promise<void> {
    await this.#call('DeleteRule', { id });
    this.#rules.delete(id);
  }

  getRule(id: number): Rule | undefined {
    return this.#rules.get(id);
  }

  rules(): Rule[] {
    return [...this.#rules.values()].sort((a, b) => a.id - b.id);
  }

  async setRuleAction(id: number, action: RuleAction): Promise<void> {
    await this.#call('SetRuleAction', { id, action: actionToWire(action) });
    const r = this.#rules.get(id);
    if (r !== undefined) r.action = { ...action };
  }

  /** whether the node answered SetRuleActions UNIMPLEMENTED (an older node): per-rule calls from then on */
  #noBatchActions = false;

  /** Many rules' actions in one call; a node without SetRuleActions gets one SetRuleAction per rule. */
  async setRuleActions(updates: readonly RuleActionUpdate[]): Promise<void> {
    await this.#setRuleActions(updates);
  }

  /**
   * setRuleActions with, in its reply, each touched switch's
   * SentTowardsInstances after the updates, and the marks of `marksOf`
   * (SwitchControl.setRuleActionsThenRead); a node that predates the flags
   * (or SetRuleActions) is asked for the counts separately, and the marks
   * are left to the caller.
   */
  async setRuleActionsThenRead(updates: readonly RuleActionUpdate[], marksOf?: number): Promise<Map<string, AfterWrite>> {
    const reply = await this.#setRuleActions(updates, { then_sent_towards: true, then_marks_of: marksOf ?? 0 });
    const after = new Map<string, AfterWrite>();
    for (const a of (reply?.['after'] as Wire[] | undefined) ?? []) {
      const marks = a['marks'] as Wire | null | undefined;
      after.set(String(a['switch'] ?? ''), { sent: sentTowardsFromWire(a), ...(marksOf === undefined || marks === null || marks === undefined ? {} : { marks: marksFromWire(marks) }) });
    }
    for (const sw of new Set(updates.map((u) => this.#rules.get(u.id)?.switch)))
      if (sw !== undefined && !after.has(sw)) after.set(sw, { sent: await this.sentTowardsInstances(sw) });
    return after;
  }

  /** the SetRuleActions reply, or undefined where the node took per-rule calls */
  async #setRuleActions(updates: readonly RuleActionUpdate[], then: Wire = {}): Promise<Wire | undefined> {
    if (!this.#noBatchActions)
      try {
        const reply = await this.#call('SetRuleActions', { updates: updates.map((u) => ({ id: u.id, action: actionToWire(u.action) })), ...then });
        for (const u of updates) {
          const r = this.#rules.get(u.id);
          if (r !== undefined) r.action = { ...u.action };
        }
        return reply;
      } catch (e) {
        // a failure part-way leaves the node's earlier updates done and ours unknown: the rules are read back
        if (!(e instanceof NodeCallError && e.code === grpc.status.UNIMPLEMENTED)) {
          await this.refresh().catch(() => undefined);
          throw e;
        }
        this.#noBatchActions = true;
      }
    for (const u of updates) await this.setRuleAction(u.id, u.action);
    return undefined;
  }

  async ruleCounters(id: number): Promise<Counter> {
    return counterFromWire(await this.#call('RuleCounters', { id }));
  }

  async portCounters(sw: string): Promise<PortCounters[]> {
    return (((await this.#call('PortCounters', { switch: sw }))['ports'] as Wire[]) ?? []).map(portCountersFromWire);
  }

  async handoverCounters(sw: string, handoverId: number): Promise<HandoverMarkCounters> {
    return marksFromWire(await this.#call('HandoverCounters', { switch: sw, handover_id: handoverId }));
  }

  async resetHandoverCounters(sw: string, handoverId: number): Promise<void> {
    await this.#call('ResetHandoverCounters', { switch: sw, handover_id: handoverId });
  }

  /** data frames this node's switches sent to the controller (the baseline's DIVERT only) */
  async controllerDataPackets(): Promise<Counter> {
    return counterFromWire(await this.#call('ControllerDataPackets', {}));
  }

  /**
   * The controller-buffer baseline's packet path: the frames this node's
   * switches divert, as they divert them, until close(). drain() resolves
   * once every frame diverted before it has been delivered to `onFrame`.
   */
  openDivertedFrames(onFrame: (f: DivertedFrame) => void, onError: (e: Error) => void = () => undefined): ControllerChannel {
    const def = NODE_SERVICE['DivertedFrames']!;
    const stream = this.#client.makeServerStreamRequest<Wire, Wire>(def.path, def.requestSerialize as (v: Wire) => Buffer, def.responseDeserialize as (b: Buffer) => Wire, {}, new grpc.Metadata(), {});
    let opened!: () => void;
    let failed: Error | undefined;
    const ready = new Promise<void>((resolve) => (opened = resolve));
    const waiting = new Map<bigint, { resolve: () => void; reject: (e: Error) => void }>();
    let closed = false;
    stream.on('data', (m: Wire) => {
      opened();
      for (const f of (m['frames'] as Wire[] | undefined) ?? []) onFrame(divertedFrameFromWire(f));
      const drained = BigInt(String(m['drained'] ?? '0'));
      if (drained !== 0n) {
        waiting.get(drained)?.resolve();
        waiting.delete(drained);
      }
    });
    const fail = (e: Error): void => {
      failed = e;
      opened();
      for (const w of waiting.values()) w.reject(e);
      waiting.clear();
      if (!closed) onError(e);
    };
    stream.on('error', (e: grpc.ServiceError) => {
      if (!closed) fail(this.#error('DivertedFrames', e));
    });
    stream.on('end', () => {
      // a refused stream ends before its error arrives: let the error say why
      setImmediate(() => {
        if (!closed && failed === undefined) fail(new DataPlaneError(`node ${this.name}: the DivertedFrames stream ended`));
      });
    });
    let next = 0n;
    return {
      drain: async () => {
        await ready;
        if (failed !== undefined) throw failed;
        const marker = ++next;
        const seen = new Promise<void>((resolve, reject) => waiting.set(marker, { resolve, reject }));
        await Promise.all([this.#call('DrainDiverted', { marker: String(marker) }), seen]);
      },
      close: () => {
        closed = true;
        stream.cancel();
      },
    };
  }

  /** Frames out of a switch port of this node, in order (batches of at most SEND_LIMITS.frames). */
  async sendFromController(sw: string, port: string, frames: readonly Buffer[]): Promise<void> {
    for (let i = 0; i < frames.length; i += SEND_LIMITS.frames) await this.#call('SendFromController', { switch: sw, port, frames: frames.slice(i, i + SEND_LIMITS.frames) });
  }

  async setRelay(sw: string, handoverId: number, outPort: string): Promise<void> {
    await this.#call('SetRelay', { switch: sw, handover_id: handoverId, out_port: outPort });
  }

  async clearRelay(sw: string, handoverId: number): Promise<void> {
    await this.#call('ClearRelay', { switch: sw, handover_id: handoverId });
  }

  // ---------------------------------------------------------------- agent control

  agentInstances(): AgentInstanceInfo[] {
    return this.#health.instances.map((i) => ({ name: i.name, ringCapacity: i.ringCapacity, ringCount: i.ringCount }));
  }

  async checkAgent(instance: string): Promise<void> {
    await this.#call('CheckAgent', { instance });
  }

  async armOld(instance: string, handoverId: number): Promise<void> {
    await this.#call('ArmOld', { instance, handover_id: handoverId });
  }

  async armNew(instance: string, handoverId: number, ring: number): Promise<void> {
    await this.#call('ArmNew', { instance, handover_id: handoverId, ring });
  }

  async agentStatus(instance: string, handoverId: number): Promise<AgentHandoverStatus | undefined> {
    return statusFromWire(await this.#call('AgentStatus', { instance, handover_id: handoverId }));
  }

  async release(instance: string, handoverId: number, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    const max = options.maxFrames;
    if (max !== undefined && (!Number.isInteger(max) || max < 1 || max > MAX_RELEASE_FRAMES)) throw new DataPlaneError(`maxFrames ${max}: must be an integer 1..${MAX_RELEASE_FRAMES}`);
    const timeoutMs = Math.ceil(options.timeoutMs ?? CALL_DEADLINE_MS);
    const nodeWaitMs = Math.max(1, timeoutMs - Math.min(RELEASE_MARGIN_MS, Math.floor(timeoutMs / 2)));
    const r = await this.#call('Release', { instance, handover_id: handoverId, relay_to: options.relayTo ?? '', timeout_ms: nodeWaitMs, max_frames: max ?? 0 }, timeoutMs);
    const out: ReleaseResult = { released: BigInt(String(r['released'] ?? '0')), rounds: Number(r['rounds'] ?? 0) };
    // a node that predates the per-side fields released everything: leave them out (releaseDone)
    const now = (r['released_now'] as unknown[] | undefined) ?? [];
    const queued = (r['queued'] as unknown[] | undefined) ?? [];
    const passing = (r['passing'] as unknown[] | undefined) ?? [];
    if (now.length === 2 && queued.length === 2 && passing.length === 2) {
      out.releasedNow = [BigInt(String(now[0])), BigInt(String(now[1]))];
      out.queued = [Number(queued[0]), Number(queued[1])];
      out.passing = [passing[0] === true, passing[1] === true];
    }
    return out;
  }

  async interfaceDrops(instance: string): Promise<InterfaceDrops[]> {
    const r = await this.#call('InterfaceDrops', { instance });
    return ((r['ifaces'] as Wire[]) ?? []).map((d) => ({ iface: String(d['iface'] ?? ''), side: Number(d['side'] ?? 0), xmitFailed: BigInt(String(d['xmit_failed'] ?? '0')), redirectFailed: BigInt(String(d['redirect_failed'] ?? '0')), ...(d['tx_known'] === true ? { txPackets: BigInt(String(d['tx_packets'] ?? '0')) } : {}) }));
  }

  /** undefined: the node has no barrier, or predates the call (UNIMPLEMENTED): the engine waits Q */
  async sentTowardsInstances(sw: string): Promise<SentTowards[] | undefined> {
    const r = await this.#optionalCall('SentTowardsInstances', { switch: sw });
    return r === undefined ? undefined : sentTowardsFromWire(r);
  }

  async arrivedFrames(instance: string): Promise<[bigint, bigint] | undefined> {
    const r = await this.#optionalCall('ArrivedFrames', { instance });
    const n = (r?.['arrived'] as unknown[] | undefined) ?? [];
    if (r === undefined || r['exact'] !== true || n.length !== 2) return undefined;
    return [BigInt(String(n[0])), BigInt(String(n[1]))];
  }

  /**
   * Switch `sw`'s ports' receive counts on its host (a P4 switch the node's
   * config lists under p4Switches), by port name; undefined when the node
   * predates the call.
   */
  async switchArrivals(sw: string): Promise<Map<string, bigint> | undefined> {
    return (await this.switchPortInputs(sw))?.arrivals;
  }

  /**
   * Switch `sw`'s ports' receive counts and, where the node knows BMv2's
   * pid, what each port's input ring dropped (`dropped`), in one call;
   * undefined when the node predates SwitchArrivals.
   */
  async switchPortInputs(sw: string): Promise<SwitchPortInputs | undefined> {
    const r = await this.#optionalCall('SwitchArrivals', { switch: sw });
    if (r === undefined) return undefined;
    const ports = (r['ports'] as Wire[] | undefined) ?? [];
    const arrivals = new Map(ports.map((p) => [String(p['port'] ?? ''), BigInt(String(p['rx_packets'] ?? '0'))]));
    // an older node sends no drops_known: false, as without a pid
    if (r['drops_known'] !== true) return { arrivals };
    return { arrivals, dropped: new Map(ports.map((p) => [String(p['port'] ?? ''), BigInt(String(p['dropped'] ?? '0'))])) };
  }

  /** A call an older node may not know: undefined then. */
  async #optionalCall(method: NodeMethod, req: Wire): Promise<Wire | undefined> {
    try {
      return await this.#call(method, req);
    } catch (e) {
      if (e instanceof NodeCallError && e.code === grpc.status.UNIMPLEMENTED) return undefined;
      throw e;
    }
  }

  async disarm(instance: string, handoverId: number): Promise<void> {
    await this.#call('Disarm', { instance, handover_id: handoverId });
  }

  // ---------------------------------------------------------------- VNF state

  async exportState(instance: string, select: FlowSelection): Promise<FlowStateEntry[]> {
    const req = select === 'all' ? { instance, all: true } : { instance, all: false, matches: select.map(matchToWire) };
    return (((await this.#call('ExportState', req))['entries'] as Wire[]) ?? []).map(entryFromWire);
  }

  async importState(instance: string, entries: readonly FlowStateEntry[], o: { keepExisting?: boolean; timeoutMs?: number } = {}): Promise<void> {
    await this.#call('ImportState', { instance, entries: entries.map(entryToWire), keep_existing: o.keepExisting ?? false }, o.timeoutMs);
  }

  async deleteState(instance: string, flows: readonly FlowKey[]): Promise<void> {
    await this.#call('DeleteState', { instance, flows: flows.map(flowToWire) });
  }

  // ---------------------------------------------------------------- capture

  /**
   * Captures on the node until the request's count or duration, or until
   * `signal` (the stream is cancelled then: the counts are the last ones
   * the node sent, at most 250 ms old). Rejects with the node's status.
   */
  capture(r: CaptureRequest, sinks: CaptureSinks): Promise<void> {
    const def = NODE_SERVICE['Capture']!;
    return new Promise<void>((resolve, reject) => {
      const stream = this.#client.makeServerStreamRequest<Wire, Wire>(def.path, def.requestSerialize as (v: Wire) => Buffer, def.responseDeserialize as (b: Buffer) => Wire, captureRequestToWire(r), new grpc.Metadata(), {});
      let done = false;
      const onAbort = (): void => {
        done = true;
        stream.cancel();
        resolve();
      };
      if (sinks.signal?.aborted) return onAbort();
      sinks.signal?.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (m: Wire) => {
        const frames = (m['frames'] as Wire[] | undefined) ?? [];
        if (frames.length > 0) sinks.onFrames(frames.map(frameFromWire));
        if (m['counts'] !== undefined && m['counts'] !== null) sinks.onCounts(countsFromWire(m['counts'] as Wire));
      });
      stream.on('error', (e: grpc.ServiceError) => {
        sinks.signal?.removeEventListener('abort', onAbort);
        if (!done) reject(this.#error('Capture', e));
        done = true;
      });
      stream.on('end', () => {
        sinks.signal?.removeEventListener('abort', onAbort);
        if (!done) resolve();
        done = true;
      });
    });
  }

  /**
   * Has this node move `instance`'s state for the selection to `toInstance`
   * on node `peer` (reached `via`), node to node; `peer` undefined: both
   * instances are on this node. Only the selection crosses from here.
   */
  async transferStateTo(instance: string, toInstance: string, peer: { node: string; via: StatePeerVia; frames?: PeerFrames } | undefined, select: FlowSelection, o: StateTransferOptions = {}): Promise<NodeTransferResult> {
    const budget = Math.ceil(o.timeoutMs ?? this.#timeoutMs);
    const req: Wire = {
      instance,
      to_instance: toInstance,
      ...(peer === undefined ? {} : { peer: { node: peer.node, ...peer.via, ...(peer.frames?.unix === undefined || !('unix' in peer.via) ? {} : { frames_unix: peer.frames.unix }), ...(peer.frames?.port === undefined || 'unix' in peer.via ? {} : { frames_port: peer.frames.port }) } }),
      ...(select === 'all' ? { all: true } : { all: false, matches: select.map(matchToWire) }),
      handover_id: o.handoverId ?? 0,
      timeout_ms: budget,
      keep_existing: o.keepExisting ?? false,
    };
    // the node keeps to its budget; the margin lets its answer arrive, so a transfer never outlives the call
    const r = await this.#call('TransferState', req, budget + TRANSFER_MARGIN_MS);
    const identity = String(r['peer_identity'] ?? '');
    return { records: Number(r['records'] ?? 0), bytes: Number(r['bytes'] ?? 0), peer: String(r['peer_node'] ?? ''), transport: String(r['transport'] ?? ''), calls: Number(r['calls'] ?? 0), ...(identity === '' ? {} : { peerIdentity: identity }) };
  }

  async stageState(instance: string, handoverId: number, select: FlowSelection, o: { store?: StagingStore } = {}): Promise<{ flows: FlowKey[]; bytes: number; store: string }> {
    const r = await this.#call('StageState', { instance, handover_id: handoverId, ...(select === 'all' ? { all: true } : { all: false, matches: select.map(matchToWire) }), store: o.store ?? 'redis' });
    return { flows: ((r['flows'] as Wire[]) ?? []).map(flowFromWire), bytes: Number(r['bytes'] ?? 0), store: String(r['store'] ?? '') };
  }

  async obtainState(instance: string, fromInstance: string, handoverId: number, flows: readonly FlowKey[], o: { keepExisting?: boolean; store?: StagingStore } = {}): Promise<{ records: number; bytes: number; store: string }> {
    const r = await this.#call('ObtainState', { instance, from_instance: fromInstance, handover_id: handoverId, flows: flows.map(flowToWire), keep_existing: o.keepExisting ?? false, store: o.store ?? 'redis' });
    return { records: Number(r['records'] ?? 0), bytes: Number(r['bytes'] ?? 0), store: String(r['store'] ?? '') };
  }

  async discardStagedState(instance: string, handoverId: number, flows: readonly FlowKey[] | 'all', o: { deleteLocal?: boolean; store?: StagingStore } = {}): Promise<number> {
    const r = await this.#call('DiscardStagedState', { instance, handover_id: handoverId, flows: flows === 'all' ? [] : flows.map(flowToWire), delete_local: o.deleteLocal ?? false, store: o.store ?? 'redis' });
    return Number(r['keys'] ?? 0);
  }

  /** the store of a kind this node stages state in ('' : none) */
  stagingStore(kind: StagingStore = 'redis'): string {
    return (kind === 'estate' ? this.#health.estateStore : this.#health.stateStore) ?? '';
  }

  /** the Redis store this node stages state in ('' : none) */
  get stateStore(): string {
    return this.stagingStore('redis');
  }

  /** the nodes this one moves state with (its peers.allow) */
  get statePeers(): readonly string[] {
    return this.#health.statePeers ?? [];
  }
}

/** time a TransferState call waits beyond the node's own budget for its answer */
export const TRANSFER_MARGIN_MS = 2000;

/**
 * The engine's Deployment over nodes: a switch's operations go to the node
 * that runs it, an instance's to the node that carries it. Rule ids are
 * unique across the deployment (the controller numbers them).
 */
/**
 * Switches a deployment drives without a node: the controller itself
 * reaches them (P4Runtime switches, src/dataplane/bmv2/p4runtime-switches.ts).
 */
export interface DirectSwitches extends SwitchControl, Partial<Pick<ControllerPacketPath, 'openControllerChannel' | 'sendFromController'>> {
  /** a switch's ports: names and the instances they face */
  switchPorts(sw: string): readonly { name: string; instance?: string }[];
  /** data frames the switches sent the controller (only the baseline's DIVERT rules send any) */
  controllerDataPackets?(): Promise<Counter>;
  close(): void;
}

/** The nodes (switches, agents, state) and the switches driven directly, as one Deployment: each call goes to the host of its switch, rule or instance. */
export class NodeDeployment implements Deployment {
  readonly switchControl: SwitchControl;
  readonly agentControl: AgentControl;
  readonly vnfState: VnfStateStore & StoreStagedState;
  /** the controller-buffer baseline's packet path, through the switches' nodes */
  readonly packetPath: ControllerPacketPath;

  constructor(
    readonly nodes: readonly NodeClient[],
    readonly directSwitches: readonly DirectSwitches[] = [],
  ) {
    const switchHosts = (): (NodeClient | DirectSwitches)[] => [...nodes.filter((c) => c.switches().length > 0), ...directSwitches];
    const bySwitch = (sw: string): NodeClient | DirectSwitches => {
      const n = switchHosts().find((c) => c.switches().includes(sw));
      if (n === undefined) throw new DataPlaneError(`no node runs switch '${sw}' and no switch of the deployment is named so (switches: ${switchHosts().flatMap((c) => c.switches()).join(', ')})`);
      return n;
    };
    const byRule = (id: number): NodeClient | DirectSwitches => {
      const n = switchHosts().find((c) => c.getRule(id) !== undefined);
      if (n === undefined) throw new RuleError(`no rule ${id}`);
      return n;
    };
    const byInstance = (name: string): NodeClient => {
      const n = nodes.find((c) => c.agentInstances().some((i) => i.name === name));
      if (n === undefined) throw new AgentUnavailableError(name, `no node carries it (instances: ${nodes.flatMap((c) => c.agentInstances().map((i) => i.name)).join(', ')})`);
      return n;
    };
    // one call per host, in order within it; the hosts at once (each rule's update is atomic on its own switch, none waits for another's)
    const updatesPerHost = (updates: readonly RuleActionUpdate[]): Map<NodeClient | DirectSwitches, RuleActionUpdate[]> => {
      const perHost = new Map<NodeClient | DirectSwitches, RuleActionUpdate[]>();
      for (const u of updates) {
        const host = byRule(u.id);
        const us = perHost.get(host);
        if (us === undefined) perHost.set(host, [u]);
        else us.push(u);
      }
      return perHost;
    };
    const writeActions = async (host: NodeClient | DirectSwitches, us: readonly RuleActionUpdate[]): Promise<void> => {
      if (host.setRuleActions !== undefined) await host.setRuleActions(us);
      else for (const u of us) await host.setRuleAction(u.id, u.action);
    };
    this.switchControl = {
      get quiescenceMs() {
        return Math.max(1, ...switchHosts().map((c) => c.quiescenceMs));
      },
      switches: () => switchHosts().flatMap((c) => c.switches()),
      portTowards: (sw, instance) => switchHosts().find((c) => c.switches().includes(sw))?.portTowards(sw, instance),
      addRule: async (r) => {
        const id = r.id ?? 1 + Math.max(0, ...switchHosts().flatMap((c) => c.rules().map((x) => x.id)));
        if (switchHosts().some((c) => c.getRule(id) !== undefined)) throw new RuleError(`rule id ${id} exists already`);
        return bySwitch(r.switch).addRule({ ...r, id });
      },
      deleteRule: (id) => byRule(id).deleteRule(id),
      getRule: (id) => switchHosts().find((c) => c.getRule(id) !== undefined)?.getRule(id),
      rules: () => switchHosts().flatMap((c) => c.rules()).sort((a, b) => a.id - b.id),
      setRuleAction: (id, a) => byRule(id).setRuleAction(id, a),
      setRuleActions: async (updates) => {
        await allEnded([...updatesPerHost(updates)].map(([host, us]) => writeActions(host, us)));
      },
      setRuleActionsThenRead: async (updates, marksOf) => {
        // as setRuleActions: one call per host, the hosts at once; a host without the combined call gets the writes, then the counts (the marks left to the caller)
        const after = new Map<string, AfterWrite>();
        await allEnded(
          [...updatesPerHost(updates)].map(async ([host, us]) => {
            if (host.setRuleActionsThenRead !== undefined) for (const [sw, a] of await host.setRuleActionsThenRead(us, marksOf)) after.set(sw, a);
            else {
              await writeActions(host, us);
              for (const sw of new Set(us.map((u) => host.getRule(u.id)!.switch))) after.set(sw, { sent: await host.sentTowardsInstances?.(sw) });
            }
          }),
        );
        return after;
      },
      ruleCounters: (id) => byRule(id).ruleCounters(id),
      portCounters: (sw) => bySwitch(sw).portCounters(sw),
      handoverCounters: (sw, hid) => bySwitch(sw).handoverCounters(sw, hid),
      resetHandoverCounters: (sw, hid) => bySwitch(sw).resetHandoverCounters(sw, hid),
      setRelay: (sw, hid, port) => bySwitch(sw).setRelay(sw, hid, port),
      clearRelay: (sw, hid) => bySwitch(sw).clearRelay(sw, hid),
      // P4Runtime switches have no such barrier: undefined, the engine waits Q
      sentTowardsInstances: async (sw) => bySwitch(sw).sentTowardsInstances?.(sw),
      // P4Runtime switches driven directly say what they took in from each port; nodes' (XDP) switches need not
      ingestedFromInstances: async (sw) => {
        const host = bySwitch(sw);
        return host instanceof NodeClient ? undefined : host.ingestedFromInstances?.(sw);
      },
      inputShortfall: async (sw) => {
        const host = bySwitch(sw);
        return host instanceof NodeClient ? undefined : host.inputShortfall?.(sw);
      },
      countsInputDrops: (sw) => {
        const host = bySwitch(sw);
        return !(host instanceof NodeClient) && host.countsInputDrops?.(sw) === true;
      },
    };
    this.agentControl = {
      agentInstances: () => nodes.flatMap((c) => c.agentInstances()),
      checkAgent: (i) => byInstance(i).checkAgent(i),
      armOld: (i, hid) => byInstance(i).armOld(i, hid),
      armNew: (i, hid, ring) => byInstance(i).armNew(i, hid, ring),
      agentStatus: (i, hid) => byInstance(i).agentStatus(i, hid),
      release: (i, hid, o) => byInstance(i).release(i, hid, o),
      disarm: (i, hid) => byInstance(i).disarm(i, hid),
      interfaceDrops: (i) => byInstance(i).interfaceDrops(i),
      arrivedFrames: (i) => byInstance(i).arrivedFrames(i),
    };
    this.vnfState = {
      exportState: (i, sel) => byInstance(i).exportState(i, sel),
      importState: (i, e) => byInstance(i).importState(i, e),
      deleteState: (i, f) => byInstance(i).deleteState(i, f),
      // node to node when the old instance's node names the new one's as a state peer (or carries both)
      canTransferState: (from, to) => {
        const a = byInstance(from);
        const b = byInstance(to);
        return a === b || a.statePeers.includes(b.name);
      },
      transferState: (from, to, sel, o) => {
        const a = byInstance(from);
        const b = byInstance(to);
        const frames = b.statePeerFrames;
        return a.transferStateTo(from, to, a === b ? undefined : { node: b.name, via: b.statePeer, ...(frames === undefined ? {} : { frames }) }, sel, o);
      },
      // through the store when both instances' nodes stage state in the same one
      canStageState: (from, to, store) => {
        const s = byInstance(from).stagingStore(store);
        return s !== '' && s === byInstance(to).stagingStore(store);
      },
      stageState: (i, hid, sel, o) => byInstance(i).stageState(i, hid, sel, o),
      obtainState: (i, from, hid, flows, o) => byInstance(i).obtainState(i, from, hid, flows, o),
      discardStagedState: (i, hid, flows, o) => byInstance(i).discardStagedState(i, hid, flows, o),
    };
    // the controller-buffer baseline: from the switches' nodes over DivertedFrames / SendFromController, from P4 switches by packet-in / packet-out
    const switchNodes = (): NodeClient[] => nodes.filter((c) => c.switches().length > 0);
    this.packetPath = {
      controllerDataPackets: async () => {
        let packets = 0n;
        let bytes = 0n;
        const counts = await Promise.all([...switchNodes().map((n) => n.controllerDataPackets()), ...directSwitches.map(async (d) => (await d.controllerDataPackets?.()) ?? { packets: 0n, bytes: 0n })]);
        for (const c of counts) {
          packets += c.packets;
          bytes += c.bytes;
        }
        return { packets, bytes };
      },
      openControllerChannel: (onFrame) => {
        const channels = [
          ...switchNodes().map((n) => n.openDivertedFrames(onFrame)),
          ...directSwitches.map((d) => {
            if (d.openControllerChannel === undefined) throw new DataPlaneError(`switches ${d.switches().join(', ')} have no packet path to the controller: the controller-buffer baseline cannot run on them`);
            return d.openControllerChannel(onFrame);
          }),
        ];
        return {
          drain: async () => void (await Promise.all(channels.map((c) => c.drain()))),
          close: () => channels.forEach((c) => c.close()),
        };
      },
      sendFromController: (sw, port, frames) => {
        const host = bySwitch(sw);
        if (host instanceof NodeClient) return host.sendFromController(sw, port, frames);
        if (host.sendFromController === undefined) return Promise.reject(new DataPlaneError(`switch ${sw} takes no frames from the controller`));
        return host.sendFromController(sw, port, frames);
      },
    };
  }

  /** A switch's ports (names, the instances they face), wherever it runs; undefined for an unknown switch. */
  switchPorts(sw: string): readonly { name: string; instance?: string }[] | undefined {
    const direct = this.directSwitches.find((d) => d.switches().includes(sw));
    if (direct !== undefined) return direct.switchPorts(sw);
    return this.nodes.find((n) => n.switches().includes(sw))?.health.switches.find((s) => s.name === sw)?.ports;
  }

  close(): void {
    for (const n of this.nodes) n.close();
    for (const d of this.directSwitches) d.close();
  }
}
