/**
 * Every drop counter of a lab, by reason and place, for `sharpctl status`
 * and `sharpctl report`: the switch program's (no rule, forged shim,
 * malformed, bad action, no headroom, no tx port), the kernel's on switch
 * ports and VNF interfaces (could not transmit, redirect refused), and the
 * agent program's (shim rejected, malformed shim, hold ring full, frame too
 * big, replay failed, config error).
 *
 * Where they come from: the data plane's port counters and interface drops
 * (every data plane), and, for the switch reasons the port counters sum up
 * as dropOther and for the agents' counters, the nodes' Prometheus metrics
 * (a lab of node processes serves them on Unix sockets). What a data plane
 * cannot break down is named in `missing`, never shown as 0.
 */
import type { DataPlane } from '../dataplane/types.js';

/** The switch program's reasons, one counter each in port_stats (sharp_abi.h). */
export const SWITCH_PROGRAM_REASONS = [
  ['dropNoRule', 'no rule'],
  ['dropShim', 'forged shim'],
  ['dropMalformed', 'malformed'],
  ['dropBadAction', 'bad action'],
  ['dropNoHeadroom', 'no headroom for the shim'],
  ['dropNoTx', 'no tx port'],
] as const;
/** The kernel's, on a switch port or a VNF interface. */
export const DEVICE_REASONS = [
  ['xmitFailed', 'device could not transmit'],
  ['redirectFailed', 'redirect refused'],
] as const;
/** The agent program's (agent_stats). */
export const AGENT_PROGRAM_REASONS = [
  ['shimRejected', 'shim on an interface that takes none'],
  ['shimMalformed', 'malformed shim'],
  ['ringFull', 'hold ring full'],
  ['tooBig', 'frame too big for the ring'],
  ['replayFailed', 'replay failed'],
  ['configError', 'config error'],
] as const;

type SwitchReason = (typeof SWITCH_PROGRAM_REASONS)[number][0];
type DeviceReason = (typeof DEVICE_REASONS)[number][0];
type AgentReason = (typeof AGENT_PROGRAM_REASONS)[number][0];
/** the switch reasons the port counters sum up as dropOther, read one by one from node metrics */
type DetailSwitchReason = Exclude<SwitchReason, 'dropNoRule' | 'dropShim'>;

/** One switch port's counters (the switch program charges a drop to the port the frame came in on). */
export interface SwitchPortDrops extends Record<'dropNoRule' | 'dropShim' | DeviceReason, number>, Partial<Record<DetailSwitchReason, number>> {
  switch: string;
  port: string;
  /** dropMalformed + dropBadAction + dropNoHeadroom + dropNoTx, as every data plane's port counters sum them */
  dropOther: number;
}

export interface InterfaceDropCounts extends Record<DeviceReason, number> {
  iface: string;
}

/** One instance's agent program counters (absent where not readable) and its interfaces' kernel counters. */
export interface AgentDrops extends Partial<Record<AgentReason, number>> {
  instance: string;
  interfaces: InterfaceDropCounts[];
}

export interface DropCounters {
  /** every frame counted as dropped, all counters below summed (counters start when the lab comes up) */
  total: number;
  switchPorts: SwitchPortDrops[];
  agents: AgentDrops[];
  /** counters this data plane cannot read, and why (absent: every counter is here) */
  missing?: string[];
}

export class DropCountersError extends Error {
  override name = 'DropCountersError';
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/gy;

/** Parses the text exposition format (0.0.4): samples only, comments skipped. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = SAMPLE.exec(line);
    if (m === null) throw new DropCountersError(`metrics line ${i + 1} is not a sample: '${line.slice(0, 80)}'`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    LABEL.lastIndex = 0;
    let l: RegExpExecArray | null;
    while (LABEL.lastIndex < body.length && (l = LABEL.exec(body)) !== null) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    if (LABEL.lastIndex !== body.length) throw new DropCountersError(`metrics line ${i + 1}: labels '${body.slice(0, 80)}' do not parse`);
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  });
  return out;
}

/** GET /metrics over a node's Unix socket. */
export async function scrapeUnix(socketPath: string, timeoutMs = 5000): Promise<string> {
  // here, not at the top: the CLI loads this module for dropCountersText and needs no HTTP
  const { scrapeUnixSocket } = await import('../metrics/scrape.js');
  try {
    return await scrapeUnixSocket(socketPath, timeoutMs);
  } catch (e) {
    throw new DropCountersError((e as Error).message, { cause: e });
  }
}

/** metric label `reason` of sharp_switch_port_drops_total -> our field (node/metrics.ts PORT_DROP_REASONS) */
const PORT_METRIC_REASON: Readonly<Record<string, SwitchReason>> = { no_rule: 'dropNoRule', shim: 'dropShim', malformed: 'dropMalformed', bad_action: 'dropBadAction', no_headroom: 'dropNoHeadroom', no_tx: 'dropNoTx' };

/** agent metric (and its `reason` label) -> our field */
function agentReasonOf(s: Sample): AgentReason | undefined {
  switch (s.name) {
    case 'sharp_agent_drops_total':
      return s.labels['reason'] === 'shim_rejected' ? 'shimRejected' : s.labels['reason'] === 'shim_malformed' ? 'shimMalformed' : undefined;
    case 'sharp_agent_hold_overflow_total':
      return s.labels['reason'] === 'ring_full' ? 'ringFull' : s.labels['reason'] === 'too_big' ? 'tooBig' : undefined;
    case 'sharp_agent_replay_failures_total':
      return 'replayFailed';
    case 'sharp_agent_config_errors_total':
      return 'configError';
    default:
      return undefined;
  }
}

export interface DropCounterSources {
  dp: Pick<DataPlane, 'kind' | 'switches' | 'portCounters' | 'agentInstances' | 'interfaceDrops'>;
  /** the nodes' metrics sockets; without them the switch's other reasons stay summed (dropOther) and the agents' are missing */
  metricsSockets?: readonly string[];
}

/** Reads every drop counter now. */
export async function readDropCounters(src: DropCounterSources): Promise<DropCounters> {
  const { dp } = src;
  // every read at once: each is a round trip to a node process
  const missing: string[] = [];
  const [expositions, switchReads, instanceReads] = await Promise.all([
    // a node whose metrics fail leaves its detail unread, said so; the rest is still shown
    Promise.all(
      (src.metricsSockets ?? []).map((s) =>
        scrapeUnix(s).catch((e: unknown) => {
          missing.push(`${e instanceof Error ? e.message : String(e)}`);
          return '';
        }),
      ),
    ),
    Promise.all(dp.switches().map(async (sw) => ({ sw, ports: await dp.portCounters(sw) }))),
    Promise.all(dp.agentInstances().map(async (inst) => ({ inst, ifaces: dp.interfaceDrops === undefined ? [] : await dp.interfaceDrops(inst.name) }))),
  ]);
  const samples = expositions.flatMap(parseExposition);
  const portDetail = new Map<string, Partial<Record<SwitchReason, number>>>();
  const agentDetail = new Map<string, Partial<Record<AgentReason, number>>>();
  for (const s of samples) {
    if (s.name === 'sharp_switch_port_drops_total') {
      const field = PORT_METRIC_REASON[s.labels['reason'] ?? ''];
      if (field === undefined) continue;
      const k = `${s.labels['switch']}/${s.labels['port']}`;
      portDetail.set(k, { ...portDetail.get(k), [field]: s.value });
      continue;
    }
    const field = agentReasonOf(s);
    const inst = s.labels['instance'];
    if (field === undefined || inst === undefined) continue;
    // a reason with several samples (none today) adds up
    const d = agentDetail.get(inst) ?? {};
    d[field] = (d[field] ?? 0) + s.value;
    agentDetail.set(inst, d);
  }
  const switchPorts: SwitchPortDrops[] = [];
  for (const { sw, ports } of switchReads)
    for (const p of ports) {
      const detail = portDetail.get(`${sw}/${p.port}`);
      switchPorts.push({
        switch: sw,
        port: p.port,
        dropNoRule: Number(p.dropNoRule),
        dropShim: Number(p.dropShim),
        ...(detail === undefined ? {} : { dropMalformed: detail.dropMalformed ?? 0, dropBadAction: detail.dropBadAction ?? 0, dropNoHeadroom: detail.dropNoHeadroom ?? 0, dropNoTx: detail.dropNoTx ?? 0 }),
        dropOther: Number(p.dropOther),
        xmitFailed: Number(p.xmitFailed),
        redirectFailed: Number(p.redirectFailed),
      });
    }
  if (switchPorts.some((p) => p.dropMalformed === undefined)) missing.push(`the switch's malformed, bad action, no headroom and no tx port drops one by one (a ${dp.kind} data plane without node metrics counts them together as dropOther)`);
  const agents: AgentDrops[] = [];
  for (const { inst, ifaces } of instanceReads) {
    const interfaces = ifaces.map((i) => ({ iface: i.iface, xmitFailed: Number(i.xmitFailed), redirectFailed: Number(i.redirectFailed) }));
    const detail = agentDetail.get(inst.name);
    agents.push({ instance: inst.name, ...(detail === undefined ? {} : Object.fromEntries(AGENT_PROGRAM_REASONS.map(([k]) => [k, detail[k] ?? 0]))), interfaces });
  }
  if (agents.some((a) => a.shimRejected === undefined)) missing.push(`the agent programs' drops (a ${dp.kind} data plane without node metrics does not expose agent_stats)`);
  if (dp.interfaceDrops === undefined && agents.length) missing.push("the VNF interfaces' kernel drops (this data plane does not report them)");
  const sum = (xs: readonly (number | undefined)[]): number => xs.reduce<number>((a, x) => a + (x ?? 0), 0);
  const total =
    sum(switchPorts.flatMap((p) => [p.dropNoRule, p.dropShim, p.dropOther, p.xmitFailed, p.redirectFailed])) +
    sum(agents.flatMap((a) => [...AGENT_PROGRAM_REASONS.map(([k]) => a[k]), ...a.interfaces.flatMap((i) => [i.xmitFailed, i.redirectFailed])]));
  return { total, switchPorts, agents, ...(missing.length ? { missing } : {}) };
}

/** "forged shim 1 (s1/s1-client 1)": a reason's total, and where when any */
function reasonText(label: string, places: readonly { where: string; n: number | undefined }[]): string {
  const hit = places.filter((p) => (p.n ?? 0) > 0);
  const total = hit.reduce((a, p) => a + p.n!, 0);
  return `${label} ${total}${hit.length ? ` (${hit.map((p) => `${p.where} ${p.n}`).join(', ')})` : ''}`;
}

/** The text lines of `status` and `report`: every counter, by reason, with where it is not 0. */
export function dropCountersText(d: DropCounters): string[] {
  const ports = d.switchPorts.map((p) => ({ where: `${p.switch}/${p.port}`, p }));
  const detailed = ports.every(({ p }) => p.dropMalformed !== undefined);
  const switchProgram = SWITCH_PROGRAM_REASONS.filter(([k]) => detailed || k === 'dropNoRule' || k === 'dropShim').map(([k, label]) => reasonText(label, ports.map(({ where, p }) => ({ where, n: p[k] }))));
  if (!detailed) switchProgram.push(reasonText('other (malformed, bad action, no headroom, no tx port)', ports.map(({ where, p }) => ({ where, n: p.dropOther }))));
  const lines = [`drops: ${d.total} frame${d.total === 1 ? '' : 's'} in all, by reason (counted since the lab came up)`, `  switch program   ${switchProgram.join(', ')}`];
  lines.push(`  switch ports     ${DEVICE_REASONS.map(([k, label]) => reasonText(label, ports.map(({ where, p }) => ({ where, n: p[k] })))).join(', ')}`);
  const agents = d.agents.filter((a) => a.shimRejected !== undefined);
  if (agents.length) lines.push(`  agent program    ${AGENT_PROGRAM_REASONS.map(([k, label]) => reasonText(label, agents.map((a) => ({ where: a.instance, n: a[k] })))).join(', ')}`);
  const ifaces = d.agents.flatMap((a) => a.interfaces.map((i) => ({ where: `${a.instance}/${i.iface}`, i })));
  if (ifaces.length) lines.push(`  VNF interfaces   ${DEVICE_REASONS.map(([k, label]) => reasonText(label, ifaces.map(({ where, i }) => ({ where, n: i[k] })))).join(', ')}`);
  for (const m of d.missing ?? []) lines.push(`  not read: ${m}`);
  return lines;
}
