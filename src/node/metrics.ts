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
import { vnfKind } from './vnf-kinds.js';

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;
type Value = number | bigint;

/** Escapes a label value: backslash, double quote, newline. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(l: Labels): string {
  const keys = Object.keys(l);
  return keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(l[k]!)}"`).join(',')}}`;
}

function valueText(v: Value): string {
  if (typeof v === 'bigint') return v.toString();
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Builds one exposition: families in order, each HELP and TYPE once. */
export class Exposition {
  readonly #lines: string[] = [];
  readonly #families = new Set<string>();

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    if (this.#families.has(name)) return this;
    this.#families.add(name);
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, labels: Labels, value: Value): this {
    this.#lines.push(`${name}${labelText(labels)} ${valueText(value)}`);
    return this;
  }

  /** A counter family with its samples. */
  counter(name: string, help: string, samples: readonly (readonly [Labels, Value])[]): this {
    this.family(name, 'counter', help);
    for (const [l, v] of samples) this.sample(name, l, v);
    return this;
  }

  gauge(name: string, help: string, samples: readonly (readonly [Labels, Value])[]): this {
    this.family(name, 'gauge', help);
    for (const [l, v] of samples) this.sample(name, l, v);
    return this;
  }

  text(): string {
    return this.#lines.join('\n') + '\n';
  }
}

/** Seconds; Prometheus' default buckets start at 5 ms, a node call takes tens of µs to a few ms (Release: up to seconds). */
export const API_LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A histogram with fixed label names, observed in seconds. */
export class Histogram {
  readonly #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = API_LATENCY_BUCKETS,
  ) {
    if (buckets.some((b, i) => i > 0 && b <= buckets[i - 1]!)) throw new RangeError(`histogram ${name}: buckets must increase`);
  }

  observe(labels: Labels, seconds: number): void {
    const key = JSON.stringify(Object.entries(labels).sort());
    let s = this.#series.get(key);
    if (s === undefined) {
      s = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) s.counts[i]!++;
    s.sum += seconds;
    s.count++;
  }

  write(e: Exposition): void {
    e.family(this.name, 'histogram', this.help);
    for (const s of this.#series.values()) {
      this.buckets.forEach((b, i) => e.sample(`${this.name}_bucket`, { ...s.labels, le: String(b) }, s.counts[i]!));
      e.sample(`${this.name}_bucket`, { ...s.labels, le: '+Inf' }, s.count);
      e.sample(`${this.name}_sum`, s.labels, s.sum);
      e.sample(`${this.name}_count`, s.labels, s.count);
    }
  }
}

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

export interface NodeMetricsSource {
  config: NodeConfig;
  dataPlane: XdpDataPlane;
  api: Histogram;
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
