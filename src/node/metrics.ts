/**
 * Prometheus metrics of a node daemon, in the text exposition format
 * (version 0.0.4), read straight from the data plane's maps at each scrape:
 * the switch's port_stats, rule_stats and ho_stats, the agents' agent_stats
 * and handovers (hold rings), the VNFs' vnf_stats; and a latency histogram
 * of the node API's calls. Every counter is a sum over CPUs of a kernel
 * counter, so it survives a node restart (the maps are pinned) and resets
 * only where the data plane resets it (ho_stats at a new handover).
 */
import {
  sharpAgentHoCodec,
  sharpAgentStatsCodec,
  sharpHoStatsCodec,
  sharpPortStatsCodec,
  sharpRuleStatsCodec,
  sharpVnfStatsCodec,
  SHARP_AGENT_NEW,
  SHARP_HOLD_PASSING,
  type SharpAgentStats,
  type SharpPortStats,
  type SharpVnfStats,
} from '../generated/abi.js';
import { u32 } from '../bpf/index.js';
import type { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import type { NodeConfig } from './config.js';
import { nodeStateBackend, vnfKind } from './vnf-kinds.js';
import { Counter, Exposition, Histogram, type Labels, type Value } from '../metrics/exposition.js';

export { API_LATENCY_BUCKETS, EXPOSITION_CONTENT_TYPE, Exposition, Histogram, escapeLabel, type Labels } from '../metrics/exposition.js';


const sumField = <T extends object>(rows: readonly T[] | undefined, k: keyof T): bigint => (rows ?? []).reduce((a, r) => a + (r[k] as bigint), 0n);

/** port_stats drop fields -> the `reason` label of sharp_switch_port_drops_total */
export const PORT_DROP_REASONS: readonly (readonly [keyof SharpPortStats, string])[] = [
  ['drop_no_rule', 'no_rule'],
  ['drop_shim', 'shim'],
  ['drop_malformed', 'malformed'],
  ['drop_bad_action', 'bad_action'],
  ['drop_no_headroom', 'no_headroom'],
  ['drop_no_tx', 'no_tx'],
];

/** agent_stats drop fields -> reason of sharp_agent_drops_total (ring overflow has its own counter) */
export const AGENT_DROP_REASONS: readonly (readonly [keyof SharpAgentStats, string])[] = [
  ['shim_rejected', 'shim_rejected'],
  ['shim_malformed', 'shim_malformed'],
];

/** The node's state operations (the `operation` label of sharp_node_state_duration_seconds), by the rpc that does them. */
export const STATE_OPERATIONS = {
  ExportState: 'export',
  ImportState: 'import',
  DeleteState: 'delete',
  TransferState: 'transfer',
  StageState: 'stage',
  ObtainState: 'obtain',
  DiscardStagedState: 'discard',
} as const;
export type StateOperation = (typeof STATE_OPERATIONS)[keyof typeof STATE_OPERATIONS];

/** operations on one of the node's staging stores (its stateStore: redis, estate) rather than on the instance's own state */
export const STORE_OPERATIONS: ReadonlySet<StateOperation> = new Set(['stage', 'obtain', 'discard']);

/** What the node API's handlers report of the work they did (service.ts calls it once per successful call). */
export interface NodeOperationObserver {
  /** a Release: `relay` when it sent the held frames back to the switch (rollback), else into the VNF */
  released(instance: string, mode: 'vnf' | 'relay', rounds: number, seconds: number): void;
  /** `store`: the staging store of a stage, obtain or discard (redis, estate) */
  stateOperation(instance: string, operation: StateOperation, seconds: number, store?: string): void;
}

/**
 * Release work and state-operation time of a node process: kept in the
 * process (these are not in any map), so they start at 0 when the daemon
 * starts — a counter reset Prometheus' rate() allows for.
 */
export class NodeOperationMetrics implements NodeOperationObserver {
  readonly #rounds = new Counter('sharp_agent_release_rounds_total', 'Replay rounds the node ran to release hold rings (each round re-injects the frames ready), by instance; since the node daemon started');
  readonly #release = new Histogram('sharp_agent_release_duration_seconds', 'Time a Release took, by instance and mode (vnf: held frames into the VNF; relay: back to the switch, a rollback); since the node daemon started');
  readonly #state = new Histogram('sharp_node_state_duration_seconds', "Time a state operation of the node took, by backend (vnf-map: an XDP VNF's map, conntrack: a stack VNF's table; redis, estate: the node's staging store) and operation; since the node daemon started");
  readonly #kinds: ReadonlyMap<string, NodeConfig['instances'][number]['kind']>;

  constructor(instances: NodeConfig['instances']) {
    this.#kinds = new Map(instances.map((i) => [i.name, i.kind]));
    // every instance's series from the start: a rate over a fresh node reads 0, not "no data"
    for (const i of instances) this.#rounds.inc({ instance: i.name }, 0);
  }

  released(instance: string, mode: 'vnf' | 'relay', rounds: number, seconds: number): void {
    this.#rounds.inc({ instance }, rounds);
    this.#release.observe({ instance, mode }, seconds);
  }

  stateOperation(instance: string, operation: StateOperation, seconds: number, store?: string): void {
    const backend = STORE_OPERATIONS.has(operation) ? (store ?? 'redis') : nodeStateBackend(this.#kinds.get(instance));
    this.#state.observe({ backend, operation }, seconds);
  }

  write(e: Exposition): void {
    if (this.#kinds.size === 0) return;
    this.#rounds.write(e);
    this.#release.write(e);
    this.#state.write(e);
  }
}

export interface NodeMetricsSource {
  config: NodeConfig;
  dataPlane: XdpDataPlane;
  api: Histogram;
  operations: NodeOperationMetrics;
  startedAt: number;
  version: string;
}

/** The node API latency histogram (one per node process). */
export function apiLatencyHistogram(): Histogram {
  return new Histogram('sharp_node_api_request_duration_seconds', 'Node API (sharp.node.v1) call latency, by method and gRPC status code');
}

/** One scrape: everything read from the maps now. */
export function nodeExposition(src: NodeMetricsSource): string {
  const e = new Exposition();
  const c = src.config;
  e.gauge('sharp_node_info', 'Node daemon identity (always 1)', [[{ node: c.name, version: src.version }, 1]]);
  e.gauge('sharp_node_start_time_seconds', 'Unix time the node daemon started', [[{ node: c.name }, src.startedAt / 1000]]);
  switchMetrics(e, src);
  agentMetrics(e, src);
  src.operations.write(e);
  src.api.write(e);
  return e.text();
}

function switchMetrics(e: Exposition, src: NodeMetricsSource): void {
  const dp = src.dataPlane;
  type Row = readonly [Labels, bigint];
  const rx: Row[] = [];
  const rxb: Row[] = [];
  const tx: Row[] = [];
  const txb: Row[] = [];
  const drops: Row[] = [];
  const nonIp: Row[] = [];
  const relayed: Row[] = [];
  const rules: Row[] = [];
  const ruleBytes: Row[] = [];
  const marked: Row[] = [];
  for (const s of src.config.switches) {
    const coll = dp.switchObject(s.name);
    const stats = coll.map('port_stats').typed(u32, sharpPortStatsCodec);
    // a port's slot is its index in the switch's port list (xdp-dataplane.ts)
    s.ports.forEach((p, slot) => {
      const per = stats.getPerCpu(slot);
      const l = { switch: s.name, port: p.name };
      rx.push([l, sumField(per, 'rx_packets')]);
      rxb.push([l, sumField(per, 'rx_bytes')]);
      tx.push([l, sumField(per, 'tx_packets')]);
      txb.push([l, sumField(per, 'tx_bytes')]);
      for (const [k, reason] of PORT_DROP_REASONS) drops.push([{ ...l, reason }, sumField(per, k)]);
      nonIp.push([l, sumField(per, 'pass_non_ip')]);
      relayed.push([l, sumField(per, 'relayed')]);
    });
    const rs = coll.map('rule_stats').typed(u32, sharpRuleStatsCodec);
    const ho = coll.map('ho_stats').typed(u32, sharpHoStatsCodec);
    const hids = new Set<number>();
    for (const r of dp.rules().filter((x) => x.switch === s.name)) {
      const per = rs.getPerCpu(r.id);
      const l = { switch: s.name, rule: String(r.id), port: r.action.outPort };
      rules.push([l, sumField(per, 'packets')]);
      ruleBytes.push([l, sumField(per, 'bytes')]);
      if (r.action.phase !== 0 && r.action.handoverId > 0) hids.add(r.action.handoverId);
    }
    for (const h of [...hids].sort((a, b) => a - b)) {
      const per = ho.getPerCpu(h);
      marked.push([{ switch: s.name, handover: String(h), phase: 'pre' }, sumField(per, 'pre_packets')]);
      marked.push([{ switch: s.name, handover: String(h), phase: 'post' }, sumField(per, 'post_packets')]);
    }
  }
  if (src.config.switches.length === 0) return;
  e.counter('sharp_switch_port_rx_packets_total', 'Frames received on a switch port', rx);
  e.counter('sharp_switch_port_rx_bytes_total', 'Bytes received on a switch port (as received)', rxb);
  e.counter('sharp_switch_port_tx_packets_total', 'Frames sent out of a switch port (redirects accepted)', tx);
  e.counter('sharp_switch_port_tx_bytes_total', 'Bytes sent out of a switch port (an inserted shim included)', txb);
  e.counter('sharp_switch_port_drops_total', 'Frames the switch dropped, charged to their ingress port, by reason (shim: a forged shim)', drops);
  e.counter('sharp_switch_port_passed_non_ip_total', 'Non-IPv4 frames passed to the stack (ARP, ...)', nonIp);
  e.counter('sharp_switch_port_relayed_total', 'RELAY-shim frames from this VNF port forwarded by a relay route (rollback after switch-over)', relayed);
  e.counter('sharp_switch_rule_packets_total', 'Frames that matched a rule and were forwarded (port: the rule\'s egress port now)', rules);
  e.counter('sharp_switch_rule_bytes_total', 'Bytes of frames that matched a rule (without shim)', ruleBytes);
  e.counter('sharp_switch_handover_marked_packets_total', 'Frames the switch marked for a handover a rule is marking now, by phase (reset at each handover)', marked);
}

function agentMetrics(e: Exposition, src: NodeMetricsSource): void {
  if (src.config.instances.length === 0) return;
  const dp = src.dataPlane;
  type Row = readonly [Labels, Value];
  const f: Record<string, Row[]> = {};
  const push = (name: string, l: Labels, v: Value): void => void (f[name] ??= []).push([l, v]);
  for (const i of src.config.instances) {
    // agentObject, not instanceObjects: a stack VNF (kind linux) has an agent but no XDP VNF object
    const agent = dp.agents().agentObject(i.name);
    const st = agent.map('agent_stats').typed(u32, sharpAgentStatsCodec).getPerCpu(0);
    const a = (k: keyof SharpAgentStats): bigint => sumField(st, k);
    const l = { instance: i.name };
    push('sharp_agent_passed_total', l, a('passed_plain'));
    push('sharp_agent_stripped_total', l, a('stripped'));
    push('sharp_agent_unknown_handover_total', l, a('unknown_hid'));
    push('sharp_agent_held_total', l, a('held'));
    push('sharp_agent_hold_overflow_total', { ...l, reason: 'ring_full' }, a('overflow'));
    push('sharp_agent_hold_overflow_total', { ...l, reason: 'too_big' }, a('too_big'));
    push('sharp_agent_released_total', l, a('replayed'));
    push('sharp_agent_relayed_total', l, a('relayed'));
    push('sharp_agent_replay_failures_total', l, a('replay_error'));
    push('sharp_agent_replay_empty_total', l, a('replay_empty'));
    for (const [k, reason] of AGENT_DROP_REASONS) push('sharp_agent_drops_total', { ...l, reason }, a(k));
    push('sharp_agent_chain_missing_total', l, a('chain_missing'));
    push('sharp_agent_config_errors_total', l, a('config_error'));
    push('sharp_agent_hold_ring_capacity_frames', l, i.ringCapacity);
    push('sharp_agent_hold_rings', l, i.ringCount);
    // per handover armed on this instance: ring occupancy and its own counts
    const handovers = agent.map('handovers');
    let armedOld = 0;
    let armedNew = 0;
    for (const key of handovers.keys()) {
      const raw = handovers.lookup(key);
      if (raw === undefined) continue; // disarmed meanwhile
      const h = sharpAgentHoCodec.decode(raw);
      const hid = String(key.readUInt32LE(0));
      if (h.role === SHARP_AGENT_NEW) armedNew++;
      else {
        armedOld++;
        continue;
      }
      for (const side of [0, 1] as const) {
        const sl = { instance: i.name, handover: hid, ring: String(h.ring), side: String(side) };
        push('sharp_agent_hold_ring_frames', sl, ((h.tail[side] as number) - (h.head[side] as number)) >>> 0);
        push('sharp_agent_hold_ring_passing', sl, h.state[side] === SHARP_HOLD_PASSING ? 1 : 0);
        push('sharp_agent_handover_held_packets', sl, (h.held as bigint[])[side]!);
        push('sharp_agent_handover_released_packets', sl, (h.released as bigint[])[side]!);
        push('sharp_agent_handover_overflow_packets', sl, (h.overflow as bigint[])[side]!);
      }
    }
    push('sharp_agent_handovers_armed', { ...l, role: 'old' }, armedOld);
    push('sharp_agent_handovers_armed', { ...l, role: 'new' }, armedNew);
    if (vnfKind(i.kind).datapath !== 'xdp') continue; // no vnf_stats: the stack is the VNF
    const { vnf } = dp.instanceObjects(i.name);
    const vs = vnf.map('vnf_stats').typed(u32, sharpVnfStatsCodec).getPerCpu(0);
    const v = (k: keyof SharpVnfStats): bigint => sumField(vs, k);
    push('sharp_vnf_processed_total', l, v('processed'));
    push('sharp_vnf_stamped_total', l, v('stamped'));
    push('sharp_vnf_unaccounted_total', { ...l, reason: 'no_route' }, v('no_route'));
    push('sharp_vnf_unaccounted_total', { ...l, reason: 'non_ipv4' }, v('non_ipv4'));
    push('sharp_vnf_unaccounted_total', { ...l, reason: 'table_full' }, v('table_full'));
    push('sharp_vnf_unaccounted_total', { ...l, reason: 'malformed' }, v('malformed'));
  }
  const HELP: Record<string, [string, 'counter' | 'gauge']> = {
    sharp_agent_passed_total: ['Frames without shim the agent handed to the VNF', 'counter'],
    sharp_agent_stripped_total: ['Frames whose shim the agent removed', 'counter'],
    sharp_agent_unknown_handover_total: ['Shim frames of a handover not armed here: stripped and passed', 'counter'],
    sharp_agent_held_total: ['Frames stored in a hold ring', 'counter'],
    sharp_agent_hold_overflow_total: ['Frames dropped instead of held: ring full, or longer than a ring slot', 'counter'],
    sharp_agent_released_total: ['Frames replayed out of a hold ring (release or relay)', 'counter'],
    sharp_agent_relayed_total: ['Replayed frames sent back to the switch with a RELAY shim (rollback)', 'counter'],
    sharp_agent_replay_failures_total: ['Held frames that could not be re-injected', 'counter'],
    sharp_agent_replay_empty_total: ['Replay runs that found no frame ready', 'counter'],
    sharp_agent_drops_total: ['Frames the agent dropped, by reason', 'counter'],
    sharp_agent_chain_missing_total: ['Frames passed to the stack because the VNF program was missing', 'counter'],
    sharp_agent_config_errors_total: ['Frames that met a bad side/ring/replay configuration', 'counter'],
    sharp_agent_hold_ring_capacity_frames: ['Frames one hold ring holds', 'gauge'],
    sharp_agent_hold_rings: ['Hold rings per side of the instance', 'gauge'],
    sharp_agent_hold_ring_frames: ['Frames in the hold ring of a handover armed on this (new) instance, now', 'gauge'],
    sharp_agent_hold_ring_passing: ['1 once the side of a handover passes frames directly (ring drained)', 'gauge'],
    sharp_agent_handover_held_packets: ['Frames held for a handover armed here (gone at disarm)', 'gauge'],
    sharp_agent_handover_released_packets: ['Frames released for a handover armed here (gone at disarm)', 'gauge'],
    sharp_agent_handover_overflow_packets: ['Frames lost to overflow for a handover armed here (gone at disarm)', 'gauge'],
    sharp_agent_handovers_armed: ['Handovers armed on the instance, by role', 'gauge'],
    sharp_vnf_processed_total: ['IPv4 frames the example VNF counted in its per-flow state', 'counter'],
    sharp_vnf_stamped_total: ['Probes the example VNF stamped', 'counter'],
    sharp_vnf_unaccounted_total: ['Frames the example VNF forwarded or passed without per-flow state, by reason', 'counter'],
  };
  for (const [name, [help, type]] of Object.entries(HELP)) {
    const rows = f[name] ?? [];
    if (type === 'counter') e.counter(name, help, rows);
    else e.gauge(name, help, rows);
  }
}
