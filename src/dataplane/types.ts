/**
 * The data-plane contract the handover engine is written against. Nothing
 * above this interface knows whether it drives XDP or a P4 switch.
 *
 * Names: switches, ports and VNF instances are the names of the lab spec
 * ("s1", "s1-vnf2", "vnf1"); rules have numeric ids unique per data plane.
 */

import { ipv4Number } from '../net/frame.js';

/** Directional IPv4 5-tuple. Addresses dotted, ports host order. */
export interface FlowKey {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** IP protocol number (17 = UDP) */
  proto: number;
}

export interface ExactMatch {
  kind: 'exact';
  flow: FlowKey;
}

/** Fields left out match anything. Prefixes are CIDR ("10.0.0.0/24"). */
export interface WildcardMatch {
  kind: 'wildcard';
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  proto?: number;
  /** ingress port name */
  inPort?: string;
  /** higher wins among wildcard rules; exact rules always win over wildcards */
  priority: number;
}

export type RuleMatch = ExactMatch | WildcardMatch;

/** DIVERT is the controller-buffer baseline's: frames go to the controller. */
export const Phase = { NONE: 0, PRE: 1, POST: 2, DIVERT: 3 } as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

/** What a rule does with a matching packet. */
export interface RuleAction {
  /** egress port name */
  outPort: string;
  phase: Phase;
  /** handover id when phase != NONE */
  handoverId: number;
}

export interface RuleActionUpdate {
  id: number;
  action: RuleAction;
}

export interface Rule {
  id: number;
  switch: string;
  match: RuleMatch;
  action: RuleAction;
}

export interface Counter {
  packets: bigint;
  bytes: bigint;
}

export interface HandoverMarkCounters {
  pre: bigint;
  post: bigint;
}

export interface PortCounters extends Counter {
  port: string;
  txPackets: bigint;
  txBytes: bigint;
  dropNoRule: bigint;
  dropShim: bigint;
  dropOther: bigint;
  /** frames relayed back to their old instance (rollback after switch-over), charged to the port they came in on */
  relayed: bigint;
  /**
   * Frames the switch redirected to this port that its device could not
   * transmit (the kernel's tx_dropped of the port's interface: e.g. the
   * link's other end is down). The XDP program saw them leave; they never
   * arrived. 0 where the data plane cannot see it (BMv2).
   */
  xmitFailed: bigint;
  /**
   * Frames that arrived on this port and whose redirect the kernel refused
   * (its rx_dropped: e.g. the out port is down). 0 where not visible (BMv2).
   */
  redirectFailed: bigint;
  /**
   * Frames the port's interface received that the switch has not taken in:
   * in flight in its input buffer, or lost there (BMv2's libpcap ring drops
   * silently when full). See SwitchControl.inputShortfall. Absent where not
   * visible (XDP takes every frame in; a P4 switch whose host nothing reads).
   */
  notIngested?: bigint;
  /** notIngested is the input buffer's own drop count (BMv2's rings read), not what it may still hold: no settling needed */
  notIngestedExact?: boolean;
}

/** Why a frame died in the data plane, for reports (see DropCount). */
export type DropReason =
  /** a port's or an instance interface's device could not transmit it (its link or the far end is down) */
  | 'xmitFailed'
  /** a redirect was refused (the device it was sent to is down) */
  | 'redirectFailed'
  /** the switch dropped it: no rule, forged shim, malformed, bad action, no headroom, no tx port */
  | 'switchDrop'
  /** it did not fit a hold ring */
  | 'overflow'
  /** a held frame could not be replayed */
  | 'replayFailed'
  /**
   * sent towards the new instance under a handover that was rolled back,
   * held in its ring, which could not be brought back (its host did not
   * answer): counted at the switch port that sent it
   */
  | 'stranded'
  /** a userspace VNF's TUN device could not queue it to the VNF process (its queue was full) */
  | 'vnfDropped'
  /**
   * an instance sent it out of its interface towards a switch port, but the
   * switch never took it in (BMv2's libpcap ring of the port was full: it
   * drops silently); counted at that switch port
   */
  | 'notIngested';

/** A number of frames that died at one place for one reason. */
export interface DropCount {
  /** "s1/s1-vnf2" (a switch port) or "vnf2/eth1" (an instance interface) */
  where: string;
  reason: DropReason;
  frames: bigint;
}

/** The kernel's drop counters of one interface of a VNF instance (the agent's and its VNF's frames). */
export interface InterfaceDrops {
  iface: string;
  /** 0: towards the ingress switch, 1: towards the egress switch */
  side: number;
  /** frames the agent or VNF sent out of this interface that the device could not transmit */
  xmitFailed: bigint;
  /** frames that arrived on this interface whose redirect (by the agent's VNF) was refused */
  redirectFailed: bigint;
  /** frames the interface transmitted so far (its tx packets); absent where the agent's host does not say (older nodes) */
  txPackets?: bigint;
}

/** The agent's view of one handover on one instance. */
export interface AgentHandoverStatus {
  role: 'old' | 'new';
  preSeen: bigint;
  postSeen: bigint;
  /** per side (0: towards the ingress switch, 1: towards the egress switch) */
  held: [bigint, bigint];
  released: [bigint, bigint];
  overflow: [bigint, bigint];
  passed: [bigint, bigint];
  replayFailed: [bigint, bigint];
  /** frames in the ring right now */
  queued: [number, number];
  passing: [boolean, boolean];
}

/** the largest per-call bound of a release (ReleaseOptions.maxFrames; a ring holds far fewer) */
export const MAX_RELEASE_FRAMES = 2 ** 31 - 1;

export interface ReleaseOptions {
  /** send them to another instance instead of this instance's VNF (rollback after switch-over; see AgentControl.release) */
  relayTo?: string;
  timeoutMs?: number;
  /**
   * Release at most this many frames per side in this call (1..2^31-1), in
   * order; what is left stays held, and a later call goes on from there.
   * Absent: everything, and the sides flip to passing.
   */
  maxFrames?: number;
}

export interface ReleaseResult {
  /** frames released of the handover so far (both sides, every call) */
  released: bigint;
  rounds: number;
  /** per side: frames released by this call. Absent (an older node): it released everything */
  releasedNow?: [bigint, bigint];
  /** per side: frames still held after this call */
  queued?: [number, number];
  /** per side: whether it flipped to passing (its ring emptied); absent: both did */
  passing?: [boolean, boolean];
}

/** Whether a release left nothing held (an answer without per-side fields is a full release). */
export function releaseDone(r: ReleaseResult): boolean {
  return r.passing === undefined || (r.passing[0] && r.passing[1]);
}

/** One VNF per-flow state record, opaque to the engine. */
export interface FlowStateEntry {
  flow: FlowKey;
  /** the VNF's state bytes for the flow, in the VNF's own encoding */
  value: Buffer;
}

/** An instance as its agent's host knows it. */
export interface AgentInstanceInfo {
  name: string;
  ringCapacity: number;
  ringCount: number;
}

export interface InstanceInfo extends AgentInstanceInfo {
  /** the switch port facing this instance, per switch */
  ports: Readonly<Record<string, string>>;
}

/**
 * The engine's contract, split by role so that each part can live on a
 * different host: the switches (a node running the XDP switch, or BMv2 over
 * P4Runtime), the agents of the VNF instances (their nodes), the VNFs'
 * per-flow state (the instances' nodes) and, for the baseline only, the
 * controller's packet channel.
 */

/** Switch control: rules, atomic action updates, counters. Switches and ports by name. */
/** What a switch read right after rule writes (SwitchControl.setRuleActionsThenRead). */
export interface AfterWrite {
  /** sentTowardsInstances after the writes; undefined: the switch has no barrier */
  sent: SentTowards[] | undefined;
  /** the handover's marks after the barrier (asked for, and the switch has one); final for the phase the writes ended */
  marks?: HandoverMarkCounters;
}

/** Frames a switch has sent out of (or taken in from) a port facing an instance (see SwitchControl.sentTowardsInstances, ingestedFromInstances). */
export interface SentTowards {
  port: string;
  instance: string;
  /** the instance's side the port is cabled to */
  side: number;
  frames: bigint;
}

/** A port's input buffer (SwitchControl.inputShortfall): the frames in it, and the switch's ingress counter of the port as the reading used it. */
export interface PortInput {
  /** received minus taken in (minus dropped, where the switch counts its buffers' drops): waiting, or lost where it cannot tell */
  waiting: bigint;
  /** the ingress counter read before the receive count: every frame of `waiting` is taken in once it has grown by as many */
  ingested: bigint;
}

export interface SwitchControl {
  /** Q: longer than any packet takes through a switch (and through an agent into its VNF); the fallback where no exact event exists */
  readonly quiescenceMs: number;
  /**
   * The switch half of the exact quiescence event: returns once every run
   * of the switch program begun before the call has finished (its frames
   * counted and flushed to their ports' queues: a barrier on the switch's
   * host), with, per port facing a VNF instance, the frames sent out of it
   * so far. Absent or undefined: no such barrier (BMv2): the engine waits Q.
   */
  sentTowardsInstances?(sw: string): Promise<SentTowards[] | undefined>;
  /**
   * Per port facing a VNF instance, the frames the switch has taken in from
   * it so far (`frames`: its ingress counter, whatever their flow). P4
   * switches (BMv2) offer it: they read their ports through a bounded
   * buffer (libpcap's ring) that drops silently when a release outruns the
   * switch, so the engine releases in windows against it. Absent or
   * undefined: the switch takes frames in as fast as they come (XDP): the
   * release goes unbounded.
   */
  ingestedFromInstances?(sw: string): Promise<SentTowards[] | undefined>;
  /**
   * Per port name of `sw`, the frames its interface received (the kernel's
   * rx count on the switch's host) minus the frames the switch took in from
   * it (its ingress counter), the ingress counter read first: frames still
   * waiting in the switch's input buffer plus frames that buffer dropped.
   * A reading once the switch has worked off its backlog is the loss; its
   * growth while a release goes in says the switch falls behind on that
   * port. Absent or undefined: nothing reads the switch's host (XDP needs
   * none: it takes every frame in).
   */
  inputShortfall?(sw: string): Promise<Map<string, PortInput> | undefined>;
  /** whether portCounters' notIngested of `sw` are its input buffers' own drop counts (exact: nothing to estimate) */
  countsInputDrops?(sw: string): boolean;
  switches(): string[];
  /** the port of `sw` that leads to `instance`, or undefined */
  portTowards(sw: string, instance: string): string | undefined;
  addRule(rule: Omit<Rule, 'id'> & { id?: number }): Promise<Rule>;
  deleteRule(id: number): Promise<void>;
  getRule(id: number): Rule | undefined;
  rules(): Rule[];
  /** Replaces a rule's action atomically: a packet sees the old or the new action, never a mix. */
  setRuleAction(id: number, action: RuleAction): Promise<void>;
  /**
   * setRuleAction for many rules in one call (a handover of 10,000 exact
   * rules routes them all at each step): each replacement as atomic as
   * setRuleAction's, in order; a failure leaves the ones before the failed
   * one done. Absent: the engine calls setRuleAction per rule.
   */
  setRuleActions?(updates: readonly RuleActionUpdate[]): Promise<void>;
  /**
   * setRuleActions, then for every switch the updates touched what
   * sentTowardsInstances answers after them (and, with `marksOf`, that
   * handover's mark counters after its barrier): the write and the counts
   * the quiescence wait and the mark count after it need, in one round trip
   * where the switch's host takes all in one call (a node; elsewhere
   * separate calls). Taken after every update was in, so they cover every
   * frame that read an older action. Absent: the engine makes the calls.
   */
  setRuleActionsThenRead?(updates: readonly RuleActionUpdate[], marksOf?: number): Promise<Map<string, AfterWrite>>;
  ruleCounters(id: number): Promise<Counter>;
  portCounters(sw: string): Promise<PortCounters[]>;
  /** marked packets a switch sent for a handover (summed over CPUs) */
  handoverCounters(sw: string, handoverId: number): Promise<HandoverMarkCounters>;
  resetHandoverCounters(sw: string, handoverId: number): Promise<void>;
  /**
   * Rollback after switch-over: from now on, frames of `handoverId` that a
   * VNF instance's agent relays back into `sw` (shim phase RELAY, see
   * AgentControl.release with relayTo) leave `sw` unmarked by `outPort`,
   * the port towards the old instance. Every other shim stays dropped as
   * forged. Replaces an earlier route of the same handover.
   */
  setRelay(sw: string, handoverId: number, outPort: string): Promise<void>;
  /** Ends a relay route; relayed frames of `handoverId` arriving later are dropped. No route: nothing to do. */
  clearRelay(sw: string, handoverId: number): Promise<void>;
}

/** Agent control: the SHarP agents in front of the VNF instances. */
export interface AgentControl {
  agentInstances(): AgentInstanceInfo[];
  /** throws AgentUnavailableError with the reason when the instance has no working agent */
  checkAgent(instance: string): Promise<void>;
  /** old instance: count PRE packets of the handover */
  armOld(instance: string, handoverId: number): Promise<void>;
  /** new instance: hold packets of the handover in ring `ring` */
  armNew(instance: string, handoverId: number, ring: number): Promise<void>;
  agentStatus(instance: string, handoverId: number): Promise<AgentHandoverStatus | undefined>;
  /**
   * The agent half of the exact quiescence event: per side, the IPv4 and
   * shim frames that have entered the instance's agent, read before a
   * barrier on its host, so every frame counted has been through the agent
   * and its VNF when this returns. The frames enter in the order the switch
   * port sent them. Absent or undefined: the count proves nothing there (a
   * stack VNF, generic-mode XDP, an interface with several rx queues): the
   * engine waits Q.
   */
  arrivedFrames?(instance: string): Promise<[bigint, bigint] | undefined>;
  /**
   * Releases the held packets in order inside the kernel, then lets new
   * packets pass; `relayTo` sends them to another instance instead of this
   * instance's VNF (rollback after switch-over): back to the switches they
   * came from, marked RELAY, which forward them to `relayTo` by the routes
   * SwitchControl.setRelay wrote (set them first). The agent needs no
   * knowledge of the switches' or the other instance's interfaces.
   */
  release(instance: string, handoverId: number, options?: ReleaseOptions): Promise<ReleaseResult>;
  disarm(instance: string, handoverId: number): Promise<void>;
  /**
   * The kernel's drop counters of the instance's interfaces (frames its agent
   * or VNF failed to redirect or transmit). Optional: a deployment whose
   * agents cannot report them (the node API does not carry them yet) leaves
   * it out, and handovers then compare only the switches' counters.
   */
  interfaceDrops?(instance: string): Promise<InterfaceDrops[]>;
}

/** Which flows' state: every flow a rule match covers (data, so it can cross to another host), or all. */
export type FlowSelection = 'all' | readonly RuleMatch[];

/** Whether one flow is in a selection. Testing many flows against one selection: compileSelection. */
export function selects(sel: FlowSelection, flow: FlowKey): boolean {
  return sel === 'all' || sel.some((m) => matchCovers(m, flow, ipv4Number));
}

/** A FlowSelection compiled once, tested per flow (the same answer as `selects`). */
export type FlowMatcher = (flow: FlowKey) => boolean;

/**
 * Compiles a selection for testing many flows: its exact matches become one
 * hash set of flow keys, its wildcards pre-parsed masks and ports, so a test
 * costs one set look-up plus one check per wildcard instead of one check per
 * match (a handover of 10,000 exact rules over 100,000 records would
 * otherwise make 10^9 comparisons).
 */
export function compileSelection(sel: FlowSelection): FlowMatcher {
  if (sel === 'all') return () => true;
  const exact = new Set<string>();
  for (const m of sel) if (m.kind === 'exact') exact.add(exactKey(m.flow));
  const wild = compileWildcards(sel);
  if (wild === undefined) return (f) => exact.has(exactKey(f));
  return (f) => (exact.size > 0 && exact.has(exactKey(f))) || wild(ipv4Number(f.src), ipv4Number(f.dst), f.sport, f.dport, f.proto);
}

/** A flow's fields as numbers: addresses host order. */
export type NumericFlowMatcher = (src: number, dst: number, sport: number, dport: number, proto: number) => boolean;

/** The wildcard matches of a selection as one test on a flow's numbers (prefixes pre-parsed); undefined when it has none. */
export function compileWildcards(matches: readonly RuleMatch[]): NumericFlowMatcher | undefined {
  const wild: { saddr: number; smask: number; daddr: number; dmask: number; sport: number; dport: number; proto: number }[] = [];
  for (const m of matches) {
    if (m.kind !== 'wildcard') continue;
    const s = parsePrefix(m.src, ipv4Number);
    const d = parsePrefix(m.dst, ipv4Number);
    wild.push({ saddr: s.addr, smask: s.mask, daddr: d.addr, dmask: d.mask, sport: m.sport ?? 0, dport: m.dport ?? 0, proto: m.proto ?? 0 });
  }
  if (wild.length === 0) return undefined;
  return (src, dst, sport, dport, proto) => {
    for (const w of wild)
      if (
        ((src & w.smask) >>> 0) === w.saddr &&
        ((dst & w.dmask) >>> 0) === w.daddr &&
        (w.sport === 0 || w.sport === sport) &&
        (w.dport === 0 || w.dport === dport) &&
        (w.proto === 0 || w.proto === proto)
      )
        return true;
    return false;
  };
}

function exactKey(f: FlowKey): string {
  return `${f.proto}/${f.src}:${f.sport}>${f.dst}:${f.dport}`;
}

/** The VNFs' per-flow state records, where the instance's host reaches them. */
export interface VnfStateStore {
  exportState(instance: string, select: FlowSelection): Promise<FlowStateEntry[]>;
  importState(instance: string, entries: readonly FlowStateEntry[]): Promise<void>;
  deleteState(instance: string, flows: readonly FlowKey[]): Promise<void>;
  /** Whether transferState can move state from one instance to the other host to host (without the caller carrying it). */
  canTransferState?(from: string, to: string): boolean;
  /**
   * Moves the selection's state from `from` to `to` host to host: `from`'s
   * host exports it, hands it to `to`'s host and deletes it once `to`'s host
   * acknowledged. The state bytes never pass through the caller.
   */
  transferState?(from: string, to: string, select: FlowSelection, options?: StateTransferOptions): Promise<StateTransferResult>;
}

export interface StateTransferOptions {
  /** `to` keeps the records it has (a rollback: what the old instance kept is newer) */
  keepExisting?: boolean;
  /** the sending host's budget for the whole transfer (ms) */
  timeoutMs?: number;
  /** for the hosts' logs */
  handoverId?: number;
}

export interface StateTransferResult {
  records: number;
  bytes: number;
  /** the host that acknowledged the records, as it identified itself */
  peer: string;
  /** how the hosts talked: 'tls' | 'unix', or 'local' (both instances on one host) */
  transport: string;
  /** the peer's certificate as the sending host verified it (tls only) */
  peerIdentity?: string;
}

/** The baseline's (controller-buffer mode) packet path through the controller. */
export interface ControllerPacketPath {
  /** data packets that reached the controller (only diverted rules send any) */
  controllerDataPackets(): Promise<{ packets: bigint; bytes: bigint }>;
  /** frames of rules whose action is DIVERT, delivered to the controller in the order each switch sent them */
  openControllerChannel(onFrame: (f: DivertedFrame) => void): ControllerChannel;
  /** the controller sends frames out of a switch port, in order */
  sendFromController(sw: string, port: string, frames: readonly Buffer[]): Promise<void>;
}

/** What the engine drives: each part may be local or on another host. */
export interface Deployment {
  readonly switchControl: SwitchControl;
  readonly agentControl: AgentControl;
  readonly vnfState: VnfStateStore;
  /** only the controller-buffer baseline needs it */
  readonly packetPath?: ControllerPacketPath;
}

/** One process driving every part on one host: a lab's XDP or BMv2 data plane. */
export interface DataPlane extends SwitchControl, AgentControl, VnfStateStore, ControllerPacketPath {
  /** 'xdp' | 'bmv2' */
  readonly kind: string;
  instances(): InstanceInfo[];
  close(): Promise<void>;
}

/** The deployment of a data plane whose parts all run in this process. */
export function localDeployment(dp: DataPlane): Deployment {
  return { switchControl: dp, agentControl: dp, vnfState: dp, packetPath: dp };
}

/** Instances with the switch ports facing them. */
export function instancesOf(d: { switchControl: Pick<SwitchControl, 'switches' | 'portTowards'>; agentControl: Pick<AgentControl, 'agentInstances'> }): InstanceInfo[] {
  const sc = d.switchControl;
  return d.agentControl.agentInstances().map((i) => ({
    ...i,
    ports: Object.fromEntries(sc.switches().flatMap((s) => {
      const p = sc.portTowards(s, i.name);
      return p === undefined ? [] : [[s, p]];
    })),
  }));
}

export interface DivertedFrame {
  switch: string;
  handoverId: number;
  frame: Buffer;
}

export interface ControllerChannel {
  /** delivers every frame the switches have diverted so far (P4: waits for the packet-ins in flight) */
  drain(): Promise<void>;
  close(): void;
}

export class DataPlaneError extends Error {
  override name = 'DataPlaneError';
}

/**
 * Whether a control call failed without an answer (its deadline passed, its
 * host is unreachable): it may or may not have acted. Errors say so by an
 * `unanswered: true` property, on themselves or on a cause.
 */
export function unanswered(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x instanceof Error && depth < 8; x = x.cause, depth++) if ((x as { unanswered?: unknown }).unanswered === true) return true;
  return false;
}

export class AgentUnavailableError extends DataPlaneError {
  override name = 'AgentUnavailableError';
  constructor(
    readonly instance: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`instance ${instance} has no working SHarP agent: ${reason}`, options);
  }
}

export class RuleError extends DataPlaneError {
  override name = 'RuleError';
}

export function flowString(f: FlowKey): string {
  const p = f.proto === 17 ? 'udp' : f.proto === 6 ? 'tcp' : `proto${f.proto}`;
  return `${p} ${f.src}:${f.sport} -> ${f.dst}:${f.dport}`;
}

export function reverseFlow(f: FlowKey): FlowKey {
  return { src: f.dst, dst: f.src, sport: f.dport, dport: f.sport, proto: f.proto };
}

/** A CIDR prefix ("10.0.0.0/24"; a bare address is /32) as host-order address and mask, host bits cleared. */
export function parsePrefix(p: string | undefined, toNum: (a: string) => number): { addr: number; mask: number } {
  if (p === undefined) return { addr: 0, mask: 0 };
  const [net, lenStr] = p.split('/');
  const len = lenStr === undefined ? 32 : Number(lenStr);
  if (!Number.isInteger(len) || len < 0 || len > 32) throw new RuleError(`prefix ${p}: length must be 0..32`);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { addr: (toNum(net!) & mask) >>> 0, mask };
}

function prefixMatch(addr: string, prefix: string | undefined, toNum: (a: string) => number): boolean {
  const p = parsePrefix(prefix, toNum);
  return ((toNum(addr) & p.mask) >>> 0) === p.addr;
}

/** Whether a rule's match covers a flow (ingress port not considered). */
export function matchCovers(m: RuleMatch, f: FlowKey, toNum: (a: string) => number): boolean {
  if (m.kind === 'exact') {
    const e = m.flow;
    return e.src === f.src && e.dst === f.dst && e.sport === f.sport && e.dport === f.dport && e.proto === f.proto;
  }
  return (
    prefixMatch(f.src, m.src, toNum) &&
    prefixMatch(f.dst, m.dst, toNum) &&
    (m.sport === undefined || m.sport === 0 || m.sport === f.sport) &&
    (m.dport === undefined || m.dport === 0 || m.dport === f.dport) &&
    (m.proto === undefined || m.proto === 0 || m.proto === f.proto)
  );
}
