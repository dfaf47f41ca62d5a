/**
 * The node's control API (sharp.node.v1, src/node/proto/sharp_node_v1.proto):
 * the grpc-js service definition built from the .proto, and the mapping
 * between its messages and the engine's types. The .proto is the only
 * definition of the wire format.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type * as grpc from '@grpc/grpc-js';
import type { AgentHandoverStatus, Counter, FlowKey, FlowStateEntry, HandoverMarkCounters, PortCounters, Rule, RuleAction, RuleMatch, SentTowards } from '../dataplane/types.js';
import type { Phase } from '../dataplane/types.js';

export const NODE_API = 'sharp.node.v1';

/** The .proto beside the sources (dist/src/node/api.js → src/node/proto). */
export const NODE_PROTO_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src/node/proto/sharp_node_v1.proto');

// keepCase: the wire objects use the .proto's own (snake_case) field names
const root = new protobuf.Root().loadSync(NODE_PROTO_PATH, { keepCase: true });
const service = root.lookupService(`${NODE_API}.Node`);

/** A message as protobufjs' toObject gives it: uint64 as decimal strings, defaults filled in. */
export type Wire = Record<string, unknown>;

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, bytes: Buffer, defaults: true, arrays: true, oneofs: true };

function messageCodec(typeName: string): { serialize: (v: Wire) => Buffer; deserialize: (b: Buffer) => Wire } {
  const type = root.lookupType(typeName);
  return {
    serialize: (v) => {
      const w = type.encode(type.fromObject(v)).finish();
      return Buffer.from(w.buffer, w.byteOffset, w.byteLength);
    },
    deserialize: (b) => type.toObject(type.decode(b), TO_OBJECT) as Wire,
  };
}

export type NodeMethod = keyof typeof METHOD_NAMES;
const METHOD_NAMES = {
  Health: 1,
  AddRule: 1,
  DeleteRule: 1,
  ListRules: 1,
  SetRuleAction: 1,
  SetRuleActions: 1,
  RuleCounters: 1,
  PortCounters: 1,
  HandoverCounters: 1,
  ResetHandoverCounters: 1,
  ControllerDataPackets: 1,
  SetRelay: 1,
  ClearRelay: 1,
  CheckAgent: 1,
  ArmOld: 1,
  ArmNew: 1,
  AgentStatus: 1,
  Release: 1,
  Disarm: 1,
  InterfaceDrops: 1,
  ExportState: 1,
  ImportState: 1,
  DeleteState: 1,
  SentTowardsInstances: 1,
  ArrivedFrames: 1,
  SwitchArrivals: 1,
  TransferState: 1,
  StageState: 1,
  ObtainState: 1,
  DiscardStagedState: 1,
  DrainDiverted: 1,
  SendFromController: 1,
  Batch: 1,
} as const;

/**
 * The calls a Batch may carry: short ones of the switch and the agents,
 * which answer at once (never Release, the state moves or streams, whose
 * wait would hold up the calls behind them).
 */
export const BATCHABLE: ReadonlySet<NodeMethod> = new Set<NodeMethod>([
  'SetRuleAction',
  'SetRuleActions',
  'RuleCounters',
  'PortCounters',
  'HandoverCounters',
  'ResetHandoverCounters',
  'SetRelay',
  'ClearRelay',
  'CheckAgent',
  'ArmOld',
  'ArmNew',
  'AgentStatus',
  'Disarm',
  'InterfaceDrops',
  'SentTowardsInstances',
  'ArrivedFrames',
  'SwitchArrivals',
]);
/** calls per Batch at most */
export const MAX_BATCH_CALLS = 64;

/** rpcs whose reply is a stream of messages */
export type NodeStreamMethod = keyof typeof STREAM_METHOD_NAMES;
const STREAM_METHOD_NAMES = {
  Capture: 1,
  DivertedFrames: 1,
} as const;

/** The grpc-js service definition of sharp.node.v1.Node. */
export const NODE_SERVICE: grpc.ServiceDefinition = Object.fromEntries(
  [...Object.keys(METHOD_NAMES), ...Object.keys(STREAM_METHOD_NAMES)].map((name) => {
    const m = service.methods[name];
    if (m === undefined) throw new Error(`${NODE_PROTO_PATH}: no rpc ${name}`);
    const req = messageCodec(m.resolvedRequestType?.fullName.slice(1) ?? `${NODE_API}.${m.requestType}`);
    const res = messageCodec(m.resolvedResponseType?.fullName.slice(1) ?? `${NODE_API}.${m.responseType}`);
    return [
      name,
      {
        path: `/${NODE_API}.Node/${name}`,
        requestStream: false,
        responseStream: name in STREAM_METHOD_NAMES,
        requestSerialize: req.serialize,
        requestDeserialize: req.deserialize,
        responseSerialize: res.serialize,
        responseDeserialize: res.deserialize,
      },
    ];
  }),
) as grpc.ServiceDefinition;

// ---------------------------------------------------------------- mapping

const big = (v: unknown): bigint => BigInt(String(v ?? '0'));
const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const num = (v: unknown): number => Number(v ?? 0);

export const flowToWire = (f: FlowKey): Wire => ({ src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, proto: f.proto });
export const flowFromWire = (w: Wire): FlowKey => ({ src: str(w['src']), dst: str(w['dst']), sport: num(w['sport']), dport: num(w['dport']), proto: num(w['proto']) });

export function matchToWire(m: RuleMatch): Wire {
  if (m.kind === 'exact') return { exact: flowToWire(m.flow) };
  return { wildcard: { src: m.src ?? '', dst: m.dst ?? '', sport: m.sport ?? 0, dport: m.dport ?? 0, proto: m.proto ?? 0, in_port: m.inPort ?? '', priority: m.priority } };
}

export function matchFromWire(w: Wire): RuleMatch {
  if (w['kind'] === 'exact') return { kind: 'exact', flow: flowFromWire(w['exact'] as Wire) };
  if (w['kind'] !== 'wildcard') throw new TypeError('match: neither exact nor wildcard');
  const x = w['wildcard'] as Wire;
  const opt = <K extends string, V>(k: K, v: V, empty: V): Partial<Record<K, V>> => (v === empty ? {} : ({ [k]: v } as Record<K, V>));
  return {
    kind: 'wildcard',
    priority: num(x['priority']),
    ...opt('src', str(x['src']), ''),
    ...opt('dst', str(x['dst']), ''),
    ...opt('sport', num(x['sport']), 0),
    ...opt('dport', num(x['dport']), 0),
    ...opt('proto', num(x['proto']), 0),
    ...opt('inPort', str(x['in_port']), ''),
  };
}

export const actionToWire = (a: RuleAction): Wire => ({ out_port: a.outPort, phase: a.phase, handover_id: a.handoverId });
export const actionFromWire = (w: Wire | undefined): RuleAction => ({ outPort: str(w?.['out_port']), phase: num(w?.['phase']) as Phase, handoverId: num(w?.['handover_id']) });

export const ruleToWire = (r: Rule): Wire => ({ id: r.id, switch: r.switch, match: matchToWire(r.match), action: actionToWire(r.action) });
export function ruleFromWire(w: Wire): Rule {
  return { id: num(w['id']), switch: str(w['switch']), match: matchFromWire(w['match'] as Wire), action: actionFromWire(w['action'] as Wire) };
}

export const counterFromWire = (w: Wire): Counter => ({ packets: big(w['packets']), bytes: big(w['bytes']) });
export const counterToWire = (c: Counter): Wire => ({ packets: c.packets.toString(), bytes: c.bytes.toString() });

export const marksFromWire = (w: Wire): HandoverMarkCounters => ({ pre: big(w['pre']), post: big(w['post']) });
export const marksToWire = (m: HandoverMarkCounters): Wire => ({ pre: m.pre.toString(), post: m.post.toString() });

export function portCountersToWire(p: PortCounters): Wire {
  return {
    port: p.port,
    rx_packets: p.packets.toString(),
    rx_bytes: p.bytes.toString(),
    tx_packets: p.txPackets.toString(),
    tx_bytes: p.txBytes.toString(),
    drop_no_rule: p.dropNoRule.toString(),
    drop_shim: p.dropShim.toString(),
    drop_other: p.dropOther.toString(),
    relayed: p.relayed.toString(),
    xmit_failed: p.xmitFailed.toString(),
    redirect_failed: p.redirectFailed.toString(),
  };
}
export function portCountersFromWire(w: Wire): PortCounters {
  return {
    port: str(w['port']),
    packets: big(w['rx_packets']),
    bytes: big(w['rx_bytes']),
    txPackets: big(w['tx_packets']),
    txBytes: big(w['tx_bytes']),
    dropNoRule: big(w['drop_no_rule']),
    dropShim: big(w['drop_shim']),
    dropOther: big(w['drop_other']),
    relayed: big(w['relayed']),
    xmitFailed: big(w['xmit_failed']),
    redirectFailed: big(w['redirect_failed']),
  };
}

const pair = <T>(xs: unknown, f: (v: unknown) => T): [T, T] => {
  const a = (xs as unknown[] | undefined) ?? [];
  return [f(a[0]), f(a[1])];
};

export function statusToWire(s: AgentHandoverStatus | undefined): Wire {
  if (s === undefined) return { armed: false };
  const s2 = (xs: readonly bigint[]): string[] => xs.map(String);
  return {
    armed: true,
    role: s.role,
    pre_seen: s.preSeen.toString(),
    post_seen: s.postSeen.toString(),
    held: s2(s.held),
    released: s2(s.released),
    overflow: s2(s.overflow),
    passed: s2(s.passed),
    replay_failed: s2(s.replayFailed),
    queued: [...s.queued],
    passing: [...s.passing],
  };
}

export function statusFromWire(w: Wire): AgentHandoverStatus | undefined {
  if (w['armed'] !== true) return undefined;
  return {
    role: w['role'] === 'new' ? 'new' : 'old',
    preSeen: big(w['pre_seen']),
    postSeen: big(w['post_seen']),
    held: pair(w['held'], big),
    released: pair(w['released'], big),
    overflow: pair(w['overflow'], big),
    passed: pair(w['passed'], big),
    replayFailed: pair(w['replay_failed'], big),
    queued: pair(w['queued'], num),
    passing: pair(w['passing'], (v) => v === true),
  };
}

export const entryToWire = (e: FlowStateEntry): Wire => ({ flow: flowToWire(e.flow), value: e.value });
export function entryFromWire(w: Wire): FlowStateEntry {
  const v = w['value'];
  return { flow: flowFromWire(w['flow'] as Wire), value: Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array) };
}

/** What a node says about itself (Health). */
export interface NodeHealth {
  node: string;
  api: string;
  version: string;
  pid: number;
  startedAt: number;
  adopted: boolean;
  quiescenceMs: number;
  switches: { name: string; ports: { name: string; ifname: string; role: 'host' | 'vnf'; instance?: string; instanceSide?: number }[] }[];
  instances: { name: string; kind: string; ifaces: string[]; ringCapacity: number; ringCount: number }[];
  /** nodes this one moves VNF state with, node to node (its config's peers.allow) */
  statePeers?: string[];
  /** the Redis store this node stages VNF state in ('' or undefined: none) */
  stateStore?: string;
  /** the E-State group this node stages VNF state in ('' or undefined: none) */
  estateStore?: string;
  /** the framed control channel (transport/frames.ts): its Unix socket and TCP port, where the node serves one */
  frames?: { unix?: string; port?: number };
}

/** The stores a node may stage VNF state in (its config's stateStore). */
export const STAGING_STORES = ['redis', 'estate'] as const;
export type StagingStore = (typeof STAGING_STORES)[number];

export function healthToWire(h: NodeHealth): Wire {
  return {
    node: h.node,
    api: h.api,
    version: h.version,
    pid: h.pid,
    started_at: h.startedAt,
    adopted: h.adopted,
    quiescence_ms: h.quiescenceMs,
    switches: h.switches.map((s) => ({ name: s.name, ports: s.ports.map((p) => ({ name: p.name, ifname: p.ifname, role: p.role, instance: p.instance ?? '', instance_side: p.instanceSide ?? 0 })) })),
    instances: h.instances.map((i) => ({ name: i.name, kind: i.kind, ifaces: i.ifaces, ring_capacity: i.ringCapacity, ring_count: i.ringCount })),
    state_peers: h.statePeers ?? [],
    state_store: h.stateStore ?? '',
    estate_store: h.estateStore ?? '',
    frames_unix: h.frames?.unix ?? '',
    frames_port: h.frames?.port ?? 0,
  };
}

export function healthFromWire(w: Wire): NodeHealth {
  return {
    node: str(w['node']),
    api: str(w['api']),
    version: str(w['version']),
    pid: num(w['pid']),
    startedAt: num(w['started_at']),
    adopted: w['adopted'] === true,
    quiescenceMs: num(w['quiescence_ms']),
    switches: ((w['switches'] as Wire[]) ?? []).map((s) => ({
      name: str(s['name']),
      ports: ((s['ports'] as Wire[]) ?? []).map((p) => ({
        name: str(p['name']),
        ifname: str(p['ifname']),
        role: p['role'] === 'host' ? ('host' as const) : ('vnf' as const),
        ...(str(p['instance']) === '' ? {} : { instance: str(p['instance']), instanceSide: num(p['instance_side']) }),
      })),
    })),
    instances: ((w['instances'] as Wire[]) ?? []).map((i) => ({ name: str(i['name']), kind: str(i['kind']), ifaces: (i['ifaces'] as string[]) ?? [], ringCapacity: num(i['ring_capacity']), ringCount: num(i['ring_count']) })),
    statePeers: ((w['state_peers'] as unknown[]) ?? []).map(str),
    stateStore: str(w['state_store']),
    estateStore: str(w['estate_store']),
    ...(str(w['frames_unix']) === '' && num(w['frames_port']) === 0 ? {} : { frames: { ...(str(w['frames_unix']) === '' ? {} : { unix: str(w['frames_unix']) }), ...(num(w['frames_port']) === 0 ? {} : { port: num(w['frames_port']) }) } }),
  };
}

/**
 * Request metadata: the call's deadline (epoch ms) by the caller's clock.
 * gRPC sends only the time left, which a node stopped or cut off with the
 * request in its socket measures from when it reads it; the node refuses
 * what it reads too late (service.ts).
 */
export const DEADLINE_METADATA = 'sharp-deadline-ms';

/** SentTowardsInstances' answer (undefined: the node has no barrier), as in SentTowardsReply and SwitchSentTowards. */
export function sentTowardsToWire(sent: readonly SentTowards[] | undefined): Wire {
  return { exact: sent !== undefined, ports: (sent ?? []).map((p) => ({ port: p.port, instance: p.instance, side: p.side, frames: p.frames.toString() })) };
}

export function sentTowardsFromWire(w: Wire): SentTowards[] | undefined {
  if (w['exact'] !== true) return undefined;
  return ((w['ports'] as Wire[]) ?? []).map((p) => ({ port: str(p['port']), instance: str(p['instance']), side: num(p['side']), frames: big(p['frames']) }));
}
