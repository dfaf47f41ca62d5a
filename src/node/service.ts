/**
 * The node's side of sharp.node.v1: every request validated (ids, rings,
 * interfaces, batch sizes) before it reaches the data plane, which applies
 * it completely or not at all; errors become gRPC statuses that name the
 * field and the limit.
 */
import * as grpc from '@grpc/grpc-js';
import { AgentUnavailableError, DataPlaneError, RuleError, MAX_RELEASE_FRAMES, type AgentControl, type ControllerPacketPath, type SwitchControl, type RuleActionUpdate, type SentTowards, type VnfStateStore } from '../dataplane/types.js';
import { SHARP_HID_MIN, SHARP_HID_MAX } from '../generated/abi.js';
import {
  actionFromWire,
  counterToWire,
  entryFromWire,
  entryToWire,
  flowFromWire,
  flowToWire,
  healthToWire,
  DEADLINE_METADATA,
  marksToWire,
  matchFromWire,
  portCountersToWire,
  ruleToWire,
  sentTowardsToWire,
  statusToWire,
  STAGING_STORES,
  type StagingStore,
  BATCHABLE,
  MAX_BATCH_CALLS,
  NODE_SERVICE,
  type NodeHealth,
  type NodeMethod,
  type Wire,
} from './api.js';
import { captureHandler, type NodeCapture } from './capture-service.js';
import { DivertBusyError, divertedFramesHandler, SEND_LIMITS, type NodeDivert } from './divert-service.js';
import type { PeerFrames, StatePeerVia } from './client.js';
import type { NodeRedisStore } from '../state/redis-stage.js';
import { flowKeyString } from '../state/flow-key.js';
import { importKeeping, StatePeerNotAllowedError, StatePeers, StateTransferError, StateTransferTimeoutError } from './state-transfer.js';
import { describePeer, peerOf, type HasAuthContext } from './transport/server.js';
import type { FramedHandler } from './transport/frames.js';
import { STATE_OPERATIONS, STORE_OPERATIONS, type NodeOperationObserver } from './metrics.js';
import type { SwitchPortArrivals } from '../dataplane/bmv2/port-arrivals.js';

/** a node without peers still moves state between its own instances */
const localPeers = (self: string): StatePeers => new StatePeers({ self, allow: [], tls: undefined });

/** What a node serves: its switch (if it runs one) and the agents and VNF state of its instances (if any). */
export interface NodeRuntime {
  health(): NodeHealth;
  switchControl?: SwitchControl & Pick<ControllerPacketPath, 'controllerDataPackets'>;
  agents?: AgentControl & VnfStateStore;
  /** packet capture in the node's programs (the Capture rpc) */
  capture?: NodeCapture;
  /** the controller-buffer baseline's packet path (a node that runs a switch) */
  divert?: NodeDivert;
  /** node-to-node state transfers (TransferState); undefined: only between this node's own instances */
  statePeers?: StatePeers;
  /** where this node stages its instances' state for handovers (its config's stateStore), by store */
  stateStores?: Partial<Record<StagingStore, Pick<NodeRedisStore, 'describe' | 'stage' | 'obtain' | 'discard'>>>;
  /** the receive counts of the P4 switches' ports on this host (its config's p4Switches), and their input rings' drops where BMv2's pid is known */
  p4Arrivals?: Pick<SwitchPortArrivals, 'switches' | 'read' | 'dropped'>;
  /** the daemon's log */
  log?: (line: string) => void;
  /** called once per call with its method, gRPC status code name and duration (metrics) */
  observe?: (method: NodeMethod, code: string, seconds: number) => void;
  /** called once per successful Release and state operation with what it did (metrics) */
  operations?: NodeOperationObserver;
}

/** A unary call as a handler sees it: who calls, and whether the caller gave up. */
type NodeCall = HasAuthContext & { readonly cancelled: boolean };

const secondsSince = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;

/** entries per ImportState / flows per DeleteState / matches per ExportState */
export const MAX_BATCH = 100_000;
export const MAX_RELEASE_TIMEOUT_MS = 600_000;
export const MAX_TRANSFER_TIMEOUT_MS = 600_000;
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10_000;
const NODE_NAME = /^[A-Za-z0-9_-]{1,32}$/;
const TCP_ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):[0-9]{1,5}$/;
const SUN_PATH_MAX = 107;

/** A request the node refuses, with its gRPC status. */
export class NodeRequestError extends Error {
  override name = 'NodeRequestError';
  constructor(
    readonly code: grpc.status,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

const invalid = (msg: string): NodeRequestError => new NodeRequestError(grpc.status.INVALID_ARGUMENT, msg);

function toStatus(e: unknown): { code: grpc.status; details: string; name: string } {
  const err = e instanceof Error ? e : new Error(String(e));
  if (err instanceof NodeRequestError) return { code: err.code, details: err.message, name: err.name };
  // a peer's failure is not this node's: never UNAVAILABLE, which the controller reads as "this node is unreachable"
  if (err instanceof StatePeerNotAllowedError) return { code: grpc.status.PERMISSION_DENIED, details: err.message, name: err.name };
  if (err instanceof StateTransferTimeoutError) return { code: grpc.status.ABORTED, details: err.message, name: err.name };
  if (err instanceof StateTransferError) return { code: grpc.status.FAILED_PRECONDITION, details: err.message, name: err.name };
  if (err instanceof AgentUnavailableError) return { code: grpc.status.FAILED_PRECONDITION, details: err.message, name: err.name };
  if (err instanceof RuleError) return { code: /^no rule|has no port|unknown switch/.test(err.message) ? grpc.status.NOT_FOUND : /exists already|has an exact rule/.test(err.message) ? grpc.status.ALREADY_EXISTS : /at most|is full/.test(err.message) ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INVALID_ARGUMENT, details: err.message, name: err.name };
  if (err instanceof DataPlaneError) return { code: /unknown switch|no such|not armed/.test(err.message) ? grpc.status.NOT_FOUND : grpc.status.FAILED_PRECONDITION, details: err.message, name: err.name };
  return { code: grpc.status.INTERNAL, details: err.message, name: err.name };
}

/** How far the caller's clock may be ahead of this node's before a request counts as read after its deadline. */
const CLOCK_SKEW_MS = 1_000;

/**
 * Why a call must not be carried out any more, or undefined: its caller
 * cancelled it, or its deadline passed — by gRPC's own (the time left when
 * the node read it) or by the caller's clock (DEADLINE_METADATA, allowing
 * CLOCK_SKEW_MS between the hosts' clocks).
 */
function staleness(call: { readonly cancelled: boolean }, deadlineAt: number, callersDeadline: number): string | undefined {
  // the deadlines first: they say by how much
  const now = Date.now();
  if (Number.isFinite(deadlineAt) && deadlineAt <= now) return `its deadline passed ${now - deadlineAt} ms before the node read it`;
  if (Number.isFinite(callersDeadline) && callersDeadline > 0 && callersDeadline + CLOCK_SKEW_MS < now) return `its deadline (by the caller's clock) passed ${now - callersDeadline} ms before the node read it`;
  if (call.cancelled) return 'the caller cancelled it (its deadline passed) before the node read it';
  return undefined;
}

function hid(w: Wire, field = 'handover_id', label = field): number {
  const v = Number(w[field] ?? 0);
  if (!Number.isInteger(v) || v < SHARP_HID_MIN || v > SHARP_HID_MAX) throw invalid(`${label} ${v} out of range ${SHARP_HID_MIN}..${SHARP_HID_MAX}`);
  return v;
}

function batch<T>(xs: unknown, field: string): T[] {
  const a = (xs as T[] | undefined) ?? [];
  if (a.length > MAX_BATCH) throw invalid(`${field}: ${a.length} items, at most ${MAX_BATCH} per request`);
  return a;
}

/** The gRPC service's handlers for one node runtime. */
export function nodeHandlers(rt: NodeRuntime): grpc.UntypedServiceImplementation {
  return nodeService(rt).implementation;
}

/** One node runtime's calls, as gRPC handlers and as the framed channel's handler (the same calls behind both). */
export function nodeService(rt: NodeRuntime): { implementation: grpc.UntypedServiceImplementation; framed: FramedHandler } {
  const sw = (): SwitchControl => {
    if (rt.switchControl === undefined) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `node ${rt.health().node} runs no switch`);
    return rt.switchControl;
  };
  const switchNamed = (name: unknown): string => {
    const s = sw();
    const n = String(name ?? '');
    if (!s.switches().includes(n)) throw new NodeRequestError(grpc.status.NOT_FOUND, `node ${rt.health().node} runs no switch '${n}' (switches: ${s.switches().join(', ')})`);
    return n;
  };
  const agents = (): AgentControl & VnfStateStore => {
    if (rt.agents === undefined) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `node ${rt.health().node} runs no VNF instance`);
    return rt.agents;
  };
  const instance = (w: Wire): { name: string; ringCount: number } => {
    const a = agents();
    const n = String(w['instance'] ?? '');
    const i = a.agentInstances().find((x) => x.name === n);
    if (i === undefined) throw new NodeRequestError(grpc.status.NOT_FOUND, `node ${rt.health().node} has no VNF instance '${n}' (instances: ${a.agentInstances().map((x) => x.name).join(', ') || 'none'})`);
    return i;
  };
  const ruleId = (w: Wire): number => {
    const id = Number(w['id'] ?? 0);
    if (!Number.isInteger(id) || id < 1) throw invalid(`id ${id}: rule ids start at 1`);
    return id;
  };
  const port = (sw: string, p: string): void => {
    const ports = rt.health().switches.find((s) => s.name === sw)?.ports ?? [];
    if (!ports.some((x) => x.name === p)) throw new NodeRequestError(grpc.status.NOT_FOUND, `switch ${sw} has no port '${p}' (ports: ${ports.map((x) => x.name).join(', ')})`);
  };
  /** One rule's new action, checked: the rule exists, and its port; a marked action's handover id is in range. */
  const ruleActionUpdate = (w: Wire, health = rt.health()): RuleActionUpdate => {
    const id = ruleId(w);
    const r = sw().getRule(id);
    if (r === undefined) throw new NodeRequestError(grpc.status.NOT_FOUND, `no rule ${id}`);
    const action = actionFromWire(w['action'] as Wire);
    const ports = health.switches.find((s) => s.name === r.switch)?.ports ?? [];
    if (!ports.some((x) => x.name === action.outPort)) throw new NodeRequestError(grpc.status.NOT_FOUND, `switch ${r.switch} has no port '${action.outPort}' (ports: ${ports.map((x) => x.name).join(', ')})`);
    if (action.phase !== 0) hid({ handover_id: action.handoverId }, 'handover_id', 'action.handover_id');
    return { id, action };
  };

  const sentTowards = async (name: string): Promise<SentTowards[] | undefined> => {
    const s = sw();
    return s.sentTowardsInstances === undefined ? undefined : s.sentTowardsInstances(name);
  };

  const peerOfRequest = (w: Wire): { node: string; via: StatePeerVia; frames?: PeerFrames } | undefined => {
    const p = w['peer'] as Wire | undefined | null;
    const node = String(p?.['node'] ?? '');
    if (p === undefined || p === null || node === '' || node === rt.health().node) return undefined;
    if (!NODE_NAME.test(node)) throw invalid(`peer.node '${node.slice(0, 40)}': a node name is 1-32 letters, digits, _ or -`);
    const fu = String(p['frames_unix'] ?? '');
    const fp = Number(p['frames_port'] ?? 0);
    if (fu !== '' && (!fu.startsWith('/') || Buffer.byteLength(fu) > SUN_PATH_MAX)) throw invalid(`peer.frames_unix: an absolute socket path of at most ${SUN_PATH_MAX} bytes, got ${Buffer.byteLength(fu)} bytes`);
    if (!Number.isInteger(fp) || fp < 0 || fp > 65535) throw invalid(`peer.frames_port ${fp}: 1..65535 (0: none)`);
    const frames = fu === '' && fp === 0 ? {} : { frames: { ...(fu === '' ? {} : { unix: fu }), ...(fp === 0 ? {} : { port: fp }) } };
    if (p['via'] === 'unix') {
      const u = String(p['unix'] ?? '');
      if (!u.startsWith('/') || Buffer.byteLength(u) > SUN_PATH_MAX) throw invalid(`peer.unix: an absolute socket path of at most ${SUN_PATH_MAX} bytes, got ${Buffer.byteLength(u)} bytes`);
      return { node, via: { unix: u }, ...frames };
    }
    if (p['via'] === 'address') {
      const a = String(p['address'] ?? '');
      const port = Number(a.slice(a.lastIndexOf(':') + 1));
      if (!TCP_ADDRESS.test(a) || port < 1 || port > 65535) throw invalid(`peer.address '${a.slice(0, 80)}': host:port with a port 1..65535`);
      return { node, via: { address: a }, ...frames };
    }
    throw invalid(`peer: give unix or address for node ${node}`);
  };

  const store = (w: Wire): NonNullable<NodeRuntime['stateStores']>[StagingStore] & object => {
    const name = w['store'] === undefined || w['store'] === '' ? 'redis' : String(w['store']);
    if (!(STAGING_STORES as readonly string[]).includes(name)) throw invalid(`store '${name.slice(0, 40)}': one of ${STAGING_STORES.join(', ')}`);
    const st = rt.stateStores?.[name as StagingStore];
    if (st === undefined) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `node ${rt.health().node} has no stateStore.${name} in its config`);
    return st;
  };

  const impl: Record<NodeMethod, (req: Wire, call: NodeCall) => Promise<Wire>> = {
    Health: async () => healthToWire(rt.health()),
    Batch: async (w, call) => runBatch(w, call),
    AddRule: async (w) => {
      const s = switchNamed(w['switch']);
      const action = actionFromWire(w['action'] as Wire);
      port(s, action.outPort);
      const match = matchFromWire((w['match'] as Wire | undefined) ?? {});
      if (match.kind === 'wildcard' && match.inPort !== undefined) port(s, match.inPort);
      const id = Number(w['id'] ?? 0);
      return ruleToWire(await sw().addRule({ switch: s, match, action, ...(id === 0 ? {} : { id }) }));
    },
    DeleteRule: async (w) => {
      await sw().deleteRule(ruleId(w));
      return {};
    },
    ListRules: async () => ({ rules: sw().rules().map(ruleToWire) }),
    SetRuleAction: async (w) => {
      const { id, action } = ruleActionUpdate(w);
      await sw().setRuleAction(id, action);
      return {};
    },
    SetRuleActions: async (w) => {
      // every update checked before any is applied
      const health = rt.health();
      const updates = ((w['updates'] as Wire[] | undefined) ?? []).map((u) => ruleActionUpdate(u, health));
      const marksOf = Number(w['then_marks_of'] ?? 0);
      if (marksOf !== 0) hid(w, 'then_marks_of');
      const s = sw();
      if (s.setRuleActions !== undefined) await s.setRuleActions(updates);
      else for (const u of updates) await s.setRuleAction(u.id, u.action);
      if (w['then_sent_towards'] !== true) return {};
      // what a quiescence wait and a mark count after these writes need (each switch's barrier after all of them; the marks after it)
      const touched = [...new Set(updates.map((u) => s.getRule(u.id)!.switch))];
      const after = [];
      for (const name of touched) {
        const sent = await sentTowards(name);
        after.push({ switch: name, ...sentTowardsToWire(sent), ...(marksOf === 0 || sent === undefined ? {} : { marks: marksToWire(await s.handoverCounters(name, marksOf)) }) });
      }
      return { after };
    },
    RuleCounters: async (w) => counterToWire(await sw().ruleCounters(ruleId(w))),
    PortCounters: async (w) => ({ ports: (await sw().portCounters(switchNamed(w['switch']))).map(portCountersToWire) }),
    HandoverCounters: async (w) => marksToWire(await sw().handoverCounters(switchNamed(w['switch']), hid(w))),
    ResetHandoverCounters: async (w) => {
      await sw().resetHandoverCounters(switchNamed(w['switch']), hid(w));
      return {};
    },
    ControllerDataPackets: async () => (rt.switchControl === undefined ? { packets: '0', bytes: '0' } : counterToWire(await rt.switchControl.controllerDataPackets())),
    SetRelay: async (w) => {
      const s = switchNamed(w['switch']);
      const out = String(w['out_port'] ?? '');
      port(s, out);
      await sw().setRelay(s, hid(w), out);
      return {};
    },
    ClearRelay: async (w) => {
      await sw().clearRelay(switchNamed(w['switch']), hid(w));
      return {};
    },
    CheckAgent: async (w) => {
      await agents().checkAgent(instance(w).name);
      return {};
    },
    ArmOld: async (w) => {
      const i = instance(w);
      await agents().armOld(i.name, hid(w));
      return {};
    },
    ArmNew: async (w) => {
      const i = instance(w);
      const h = hid(w);
      const ring = Number(w['ring'] ?? 0);
      if (!Number.isInteger(ring) || ring < 0 || ring >= i.ringCount) throw invalid(`ring ${ring} out of range 0..${i.ringCount - 1} on ${i.name}`);
      await agents().armNew(i.name, h, ring);
      return {};
    },
    AgentStatus: async (w) => statusToWire(await agents().agentStatus(instance(w).name, hid(w))),
    Release: async (w) => {
      const i = instance(w);
      const h = hid(w);
      const timeoutMs = Number(w['timeout_ms'] ?? 0);
      if (timeoutMs > MAX_RELEASE_TIMEOUT_MS) throw invalid(`timeout_ms ${timeoutMs}: at most ${MAX_RELEASE_TIMEOUT_MS}`);
      const maxFrames = Number(w['max_frames'] ?? 0);
      if (!Number.isInteger(maxFrames) || maxFrames < 0 || maxFrames > MAX_RELEASE_FRAMES) throw invalid(`max_frames ${maxFrames}: 0 (all) or 1..${MAX_RELEASE_FRAMES}`);
      const relayTo = String(w['relay_to'] ?? '');
      const t0 = process.hrtime.bigint();
      const r = await agents().release(i.name, h, { ...(relayTo === '' ? {} : { relayTo }), ...(timeoutMs === 0 ? {} : { timeoutMs }), ...(maxFrames === 0 ? {} : { maxFrames }) });
      rt.operations?.released(i.name, relayTo === '' ? 'vnf' : 'relay', r.rounds, secondsSince(t0));
      return { released: r.released.toString(), rounds: r.rounds, released_now: (r.releasedNow ?? []).map(String), queued: r.queued ?? [], passing: r.passing ?? [] };
    },
    InterfaceDrops: async (w) => {
      const i = instance(w);
      const a = agents();
      const drops = a.interfaceDrops === undefined ? [] : await a.interfaceDrops(i.name);
      return { ifaces: drops.map((d) => ({ iface: d.iface, side: d.side, xmit_failed: d.xmitFailed.toString(), redirect_failed: d.redirectFailed.toString(), tx_packets: (d.txPackets ?? 0n).toString(), tx_known: d.txPackets !== undefined })) };
    },
    SentTowardsInstances: async (w) => sentTowardsToWire(await sentTowards(switchNamed(w['switch']))),
    ArrivedFrames: async (w) => {
      const a = agents();
      const n = a.arrivedFrames === undefined ? undefined : await a.arrivedFrames(instance(w).name);
      return { exact: n !== undefined, arrived: (n ?? []).map(String) };
    },
    SwitchArrivals: async (w) => {
      const n = String(w['switch'] ?? '');
      const known = rt.p4Arrivals?.switches() ?? [];
      if (!known.includes(n)) throw new NodeRequestError(grpc.status.NOT_FOUND, `node ${rt.health().node} reads no P4 switch '${n.slice(0, 40)}' (p4Switches: ${known.join(', ') || 'none'})`);
      const rx = rt.p4Arrivals!.read(n);
      const dropped = rt.p4Arrivals!.dropped(n);
      return { ports: [...rx].map(([port, r]) => ({ port, rx_packets: r.toString(), dropped: (dropped?.get(port) ?? 0n).toString() })), drops_known: dropped !== undefined };
    },
    Disarm: async (w) => {
      await agents().disarm(instance(w).name, hid(w));
      return {};
    },
    ExportState: async (w) => {
      const i = instance(w);
      const matches = batch<Wire>(w['matches'], 'matches').map(matchFromWire);
      const entries = await agents().exportState(i.name, w['all'] === true ? 'all' : matches);
      return { entries: entries.map(entryToWire) };
    },
    ImportState: async (w, call) => {
      const i = instance(w);
      const entries = batch<Wire>(w['entries'], 'entries').map(entryFromWire);
      const imported = await importKeeping(agents(), i.name, entries, w['keep_existing'] === true);
      const from = peerOf(call);
      if (from.transport === 'tls' && from.identity.role === 'node') rt.log?.(`imported ${imported} of ${entries.length} state records into ${i.name} from ${describePeer(from)}`);
      return {};
    },
    DeleteState: async (w) => {
      const i = instance(w);
      await agents().deleteState(i.name, batch<Wire>(w['flows'], 'flows').map(flowFromWire));
      return {};
    },
    StageState: async (w) => {
      const i = instance(w);
      const h = hid(w);
      const select = w['all'] === true ? ('all' as const) : batch<Wire>(w['matches'], 'matches').map(matchFromWire);
      const st = store(w);
      const entries = await agents().exportState(i.name, select);
      await st.stage(i.name, h, entries);
      const bytes = entries.reduce((a, e) => a + e.value.length, 0);
      rt.log?.(`handover ${h}: staged ${entries.length} state records (${bytes} bytes) of ${i.name} in ${st.describe()}`);
      return { flows: entries.map((e) => flowToWire(e.flow)), bytes: String(bytes), store: st.describe() };
    },
    ObtainState: async (w) => {
      const i = instance(w);
      const h = hid(w);
      const from = String(w['from_instance'] ?? '');
      if (!NODE_NAME.test(from)) throw invalid(`from_instance '${from.slice(0, 40)}': an instance name is 1-32 letters, digits, _ or -`);
      const flows = batch<Wire>(w['flows'], 'flows').map(flowFromWire);
      const st = store(w);
      const { found, missing } = await st.obtain(from, h, flows);
      if (missing.length > 0) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `${st.describe()} has no record of ${missing.length} of the ${flows.length} flows ${from} staged for handover ${h} (e.g. ${flowKeyString(missing[0]!)}): nothing imported into ${i.name}`);
      const imported = await importKeeping(agents(), i.name, found, w['keep_existing'] === true);
      const bytes = found.reduce((a, e) => a + e.value.length, 0);
      rt.log?.(`handover ${h}: imported ${imported} of ${found.length} state records of ${from} into ${i.name} from ${st.describe()}`);
      return { records: imported, bytes: String(bytes), store: st.describe() };
    },
    DiscardStagedState: async (w) => {
      const i = instance(w);
      const h = hid(w);
      const flows = batch<Wire>(w['flows'], 'flows').map(flowFromWire);
      if (w['delete_local'] === true && flows.length === 0) throw invalid('delete_local: name the flows whose records the instance forgets');
      const keys = await store(w).discard(i.name, h, flows.length === 0 ? 'all' : flows);
      // the store's copy first: if that fails, the instance still has everything
      if (w['delete_local'] === true) await agents().deleteState(i.name, flows);
      return { keys };
    },
    DrainDiverted: async (w) => {
      const marker = BigInt(String(w['marker'] ?? '0'));
      if (marker < 1n) throw invalid('marker: 1 or more (the drained event carries it)');
      if (rt.divert === undefined) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `node ${rt.health().node} runs no switch: nothing is diverted here`);
      try {
        await rt.divert.drain(marker);
      } catch (e) {
        if (e instanceof DivertBusyError) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, e.message);
        throw e;
      }
      return {};
    },
    SendFromController: async (w) => {
      const s = switchNamed(w['switch']);
      const p = String(w['port'] ?? '');
      port(s, p);
      const frames = ((w['frames'] as Uint8Array[] | undefined) ?? []).map((f) => Buffer.from(f));
      if (frames.length > SEND_LIMITS.frames) throw invalid(`frames: at most ${SEND_LIMITS.frames} per call, got ${frames.length}`);
      const bad = frames.findIndex((f) => f.length < SEND_LIMITS.minBytes || f.length > SEND_LIMITS.maxBytes);
      if (bad >= 0) throw invalid(`frames.${bad}: ${frames[bad]!.length} bytes; a frame is ${SEND_LIMITS.minBytes} to ${SEND_LIMITS.maxBytes} bytes`);
      if (rt.divert === undefined) throw new NodeRequestError(grpc.status.FAILED_PRECONDITION, `node ${rt.health().node} runs no switch`);
      await rt.divert.send(s, p, frames);
      return {};
    },
    TransferState: async (w) => {
      const i = instance(w);
      const toInstance = String(w['to_instance'] ?? '');
      if (!NODE_NAME.test(toInstance)) throw invalid(`to_instance '${toInstance.slice(0, 40)}': an instance name is 1-32 letters, digits, _ or -`);
      const peer = peerOfRequest(w);
      if (peer === undefined) instance({ instance: toInstance });
      if (peer !== undefined && rt.statePeers === undefined) throw new NodeRequestError(grpc.status.PERMISSION_DENIED, `node ${rt.health().node} has no peers in its config: it moves state only between its own instances`);
      const timeoutMs = Number(w['timeout_ms'] ?? 0) || DEFAULT_TRANSFER_TIMEOUT_MS;
      if (timeoutMs > MAX_TRANSFER_TIMEOUT_MS) throw invalid(`timeout_ms ${timeoutMs}: at most ${MAX_TRANSFER_TIMEOUT_MS}`);
      const handoverId = Number(w['handover_id'] ?? 0);
      if (handoverId !== 0) hid(w);
      const select = w['all'] === true ? ('all' as const) : batch<Wire>(w['matches'], 'matches').map(matchFromWire);
      const req = { instance: i.name, toInstance, peer, select, keepExisting: w['keep_existing'] === true, handoverId, deadline: Date.now() + timeoutMs };
      const r = rt.statePeers !== undefined ? await rt.statePeers.transfer(agents(), req) : await localPeers(rt.health().node).transfer(agents(), req);
      rt.log?.(`handover ${handoverId}: moved ${r.records} state records (${r.bytes} bytes) of ${i.name} to ${toInstance} on node ${r.peerNode} (${r.transport}${r.peerIdentity ? `, ${r.peerIdentity}` : ''})`);
      return { records: r.records, bytes: String(r.bytes), peer_node: r.peerNode, transport: r.transport, peer_identity: r.peerIdentity, calls: r.calls };
    },
  };

  // the state operations' time, by the instance's backend (the handler has checked the instance by the time it succeeds)
  for (const [method, operation] of Object.entries(STATE_OPERATIONS) as [keyof typeof STATE_OPERATIONS, (typeof STATE_OPERATIONS)[keyof typeof STATE_OPERATIONS]][]) {
    const fn = impl[method];
    impl[method] = async (w, call) => {
      const t0 = process.hrtime.bigint();
      const res = await fn(w, call);
      // a staging store's name: the handler has checked it (the default: redis)
      const store = STORE_OPERATIONS.has(operation) ? String(w['store'] || 'redis') : undefined;
      rt.operations?.stateOperation(String(w['instance'] ?? ''), operation, secondsSince(t0), store);
      return res;
    };
  }

  /** Batch: each call in order, as if alone (its own validation, deadline, status and metrics). */
  const runBatch = async (w: Wire, call: NodeCall): Promise<Wire> => {
    const calls = (w['calls'] as Wire[] | undefined) ?? [];
    if (calls.length === 0 || calls.length > MAX_BATCH_CALLS) throw invalid(`calls: ${calls.length} calls, 1 to ${MAX_BATCH_CALLS} per batch`);
    const methods = calls.map((c, i) => {
      const m = String(c['method'] ?? '');
      if (!BATCHABLE.has(m as NodeMethod)) throw invalid(`calls.${i}.method '${m.slice(0, 40)}': not one a batch may carry (${[...BATCHABLE].join(', ')})`);
      return m as NodeMethod;
    });
    const results: Wire[] = [];
    for (const [i, method] of methods.entries()) {
      const t0 = process.hrtime.bigint();
      const deadline = Number(calls[i]!['deadline_ms'] ?? 0);
      const r = await (async (): Promise<Wire> => {
        if (call.cancelled) return { code: grpc.status.DEADLINE_EXCEEDED, details: `${method} not carried out: the caller cancelled the batch` };
        const now = Date.now();
        if (deadline > 0 && deadline + CLOCK_SKEW_MS < now) return { code: grpc.status.DEADLINE_EXCEEDED, details: `${method} not carried out: its deadline (by the caller's clock) passed ${Math.round(now - deadline)} ms before the node read it` };
        const def = NODE_SERVICE[method]!;
        try {
          const res = await impl[method](def.requestDeserialize(calls[i]!['request'] as Buffer) as Wire, call);
          return { code: grpc.status.OK, reply: def.responseSerialize(res) };
        } catch (e) {
          const st = toStatus(e);
          return { code: st.code, details: st.details, error: st.name };
        }
      })();
      rt.observe?.(method, grpc.status[Number(r['code'])] ?? String(r['code']), secondsSince(t0));
      results.push(r);
    }
    return { results };
  };

  /** One call, however it came: refused when read after its deadline, else run; its status and metrics. */
  const runOne = (name: NodeMethod, request: () => Wire, call: NodeCall, deadlineAt: number, callersDeadline: number): Promise<{ code: grpc.status.OK; reply: Wire } | { code: grpc.status; details: string; error?: string }> => {
    const t0 = process.hrtime.bigint();
    const done = (code: grpc.status): void => rt.observe?.(name, grpc.status[code] ?? String(code), secondsSince(t0));
    // A request read after its caller gave up (the node was stopped or
    // cut off while it waited in the socket) must not act: the caller
    // has gone on as if it had not, e.g. a rollback that relayed nothing
    // and removed the relay routes, or a later handover reusing the id.
    // (one turn of the event loop first: a cancellation read in the same
    // batch of frames as the request is seen)
    return new Promise((resolve) =>
      setImmediate(() => {
        const late = staleness(call, deadlineAt, callersDeadline);
        if (late !== undefined) {
          done(grpc.status.DEADLINE_EXCEEDED);
          return resolve({ code: grpc.status.DEADLINE_EXCEEDED, details: `${name} not carried out: ${late}` });
        }
        let req: Wire;
        try {
          req = request();
        } catch (e) {
          done(grpc.status.INVALID_ARGUMENT);
          return resolve({ code: grpc.status.INVALID_ARGUMENT, details: `the ${name} request cannot be decoded: ${e instanceof Error ? e.message : String(e)}` });
        }
        impl[name](req, call).then(
          (reply) => {
            done(grpc.status.OK);
            resolve({ code: grpc.status.OK, reply });
          },
          (e: unknown) => {
            const st = toStatus(e);
            done(st.code);
            resolve({ code: st.code, details: st.details, error: st.name });
          },
        );
      }),
    );
  };

  const unary = Object.fromEntries(
    Object.keys(impl).map((name) => [
      name,
      (call: grpc.ServerUnaryCall<Wire, Wire>, cb: grpc.sendUnaryData<Wire>): void => {
        const d = call.getDeadline();
        void runOne(name as NodeMethod, () => call.request, call, d instanceof Date ? d.getTime() : d, Number(call.metadata.get(DEADLINE_METADATA)[0] ?? NaN)).then((r) => {
          if (r.code === grpc.status.OK && 'reply' in r) return cb(null, r.reply);
          const f = r as { code: grpc.status; details: string; error?: string };
          const md = new grpc.Metadata();
          if (f.error !== undefined) md.set('sharp-error', f.error);
          cb({ code: f.code, details: f.details, metadata: md });
        });
      },
    ]),
  );

  /** The framed channel's handler (transport/frames.ts): the same calls, their messages as the .proto encodes them. */
  const framed: FramedHandler = async (method, body, fc) => {
    if (!Object.hasOwn(impl, method)) return { code: grpc.status.UNIMPLEMENTED, details: `node ${rt.health().node} has no unary method ${method.slice(0, 40)} on its framed channel` };
    const name = method as NodeMethod;
    const def = NODE_SERVICE[name]!;
    const call: NodeCall = {
      getAuthContext: () => ({ sslPeerCertificate: fc.peerCertificate === undefined ? undefined : { raw: fc.peerCertificate } }),
      // as gRPC's: the caller is gone, or its deadline has passed (by its clock, with the skew allowed)
      get cancelled() {
        return fc.cancelled || (fc.deadline > 0 && Date.now() > fc.deadline + CLOCK_SKEW_MS);
      },
    };
    const r = await runOne(name, () => def.requestDeserialize(body) as Wire, call, NaN, fc.deadline);
    return r.code === grpc.status.OK && 'reply' in r ? { code: grpc.status.OK, reply: def.responseSerialize(r.reply) } : (r as { code: grpc.status; details: string; error?: string });
  };
  return { implementation: { ...unary, Capture: captureHandler(rt.capture, () => rt.health().node), DivertedFrames: divertedFramesHandler(rt.divert, () => rt.health().node) }, framed };
}
