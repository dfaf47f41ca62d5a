/**
 * Many flows in one handover (`sharpctl bench manyflows`, `make bench`, keys
 * manyflows.*): one request moving thousands of exact rules with their VNF
 * state, and one wildcard rule carrying 100,000 flows with theirs, each
 * under probe traffic on a sample of its flows, with the engine's time per
 * step and the state mover's result. The records the sample's traffic does
 * not create are imported into the old instance's flow_state map
 * beforehand: real map entries, which the move exports, imports and deletes
 * with batch map operations. Also measured side by side: a selection
 * tested flow by flow against every match vs compiled once, and deleting
 * the moved records one key per call vs BPF_MAP_DELETE_BATCH.
 */
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { standardSpec } from '../lab/netns-lab.js';
import { openLab, type OpenedLab } from '../lab/open-lab.js';
import { installRules } from '../lab/netns-lab.js';
import { HandoverEngine, type HandoverResult } from '../handover/engine.js';
import { VnfMapStateMover } from '../handover/state-mover.js';
import { stepDurations } from '../handover/metrics.js';

/** ms spent in each step (the engine's metrics compute them so too) */
export { stepDurations };
import { compileSelection, selects, localDeployment, Phase, type SwitchControl, type RuleAction, type RuleActionUpdate, type FlowKey, type FlowSelection, type FlowStateEntry, type RuleMatch } from '../dataplane/types.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../traffic/sink.js';
import { sharpVnfFlowStateCodec, sharpFlowKeyCodec } from '../generated/abi.js';
import { BpfObjectSpec } from '../bpf/index.js';
import { flowKeyToAbi } from '../dataplane/xdp/agents.js';
import { flowKeyString } from '../state/flow-key.js';
import { sleep } from '../util/mutex.js';

const UDP = 17;
export const CLIENT_IP = '10.0.0.1';
export const SERVER_IP = '10.0.0.2';
/** the probe generator's first source port and its destination port */
const BASE_PORT = 20000;
const PROBE_DPORT = 9000;

export interface ManyFlowsLabOptions {
  objectsDir: string;
  prefix: string;
  /** rules the switches' tables must hold */
  maxRules: number;
  /** records each VNF's flow_state map must hold */
  vnfFlows: number;
  ringCapacity?: number;
  /** 'in-process' (default): the data plane in this process; 'nodes': a node daemon per switch and instance, every call over the node API */
  via?: 'in-process' | 'nodes';
}

/** The standard lab, in process, its rule tables and flow_state maps sized for the run. */
export async function openManyFlowsLab(o: ManyFlowsLabOptions): Promise<OpenedLab & { workDir: string }> {
  const spec = standardSpec({ ringCapacity: o.ringCapacity ?? 8192, ringCount: 2 });
  spec.switches = spec.switches.map((s) => ({ ...s, maxRules: o.maxRules }));
  spec.vnfs = spec.vnfs.map((v) => ({ ...v, vnfFlows: o.vnfFlows }));
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-manyflows-'));
  try {
    const opened = await openLab(spec, o.prefix, { objectsDir: o.objectsDir, workDir, target: 'xdp', via: o.via ?? 'in-process' });
    await installRules(opened.dp, opened.lab.spec.rules);
    return {
      ...opened,
      workDir,
      close: async () => {
        try {
          await opened.close();
        } finally {
          rmSync(workDir, { recursive: true, force: true });
        }
      },
    };
  } catch (e) {
    rmSync(workDir, { recursive: true, force: true });
    throw e;
  }
}

/** The forward flow `i` (client:BASE_PORT+i → server:9000) and the reverse generator's flow `i` (server:BASE_PORT+i → client:9000). */
export function probeFlow(dir: 'forward' | 'reverse', i: number): FlowKey {
  return dir === 'forward'
    ? { src: CLIENT_IP, dst: SERVER_IP, sport: BASE_PORT + i, dport: PROBE_DPORT, proto: UDP }
    : { src: SERVER_IP, dst: CLIENT_IP, sport: BASE_PORT + i, dport: PROBE_DPORT, proto: UDP };
}

/**
 * `flowsPerDirection` exact rules on s1 (client→server) and as many on s2
 * (server→client), all to vnf1: the probe generators' flows 0.. in each
 * direction. Returns the rule ids and the flows, forward ones first.
 */
export async function addExactRules(dp: OpenedLab['dp'], flowsPerDirection: number): Promise<{ rules: number[]; flows: FlowKey[] }> {
  if (BASE_PORT + flowsPerDirection > 65536) throw new RangeError(`flowsPerDirection must be at most ${65536 - BASE_PORT}, got ${flowsPerDirection}`);
  const rules: number[] = [];
  const flows: FlowKey[] = [];
  for (const [dir, sw, port] of [
    ['forward', 's1', 's1-vnf1'],
    ['reverse', 's2', 's2-vnf1'],
  ] as const)
    for (let i = 0; i < flowsPerDirection; i++) {
      const flow = probeFlow(dir, i);
      rules.push((await dp.addRule({ switch: sw, match: { kind: 'exact', flow }, action: { outPort: port, phase: Phase.NONE, handoverId: 0 } })).id);
      flows.push(flow);
    }
  return { rules, flows };
}

/** A VNF counter record for `flow`: `packets` packets of 100 bytes. */
export function counterRecord(flow: FlowKey, packets: number): FlowStateEntry {
  return { flow, value: sharpVnfFlowStateCodec.encode({ packets: BigInt(packets), bytes: BigInt(packets) * 100n }) };
}

/**
 * `n` client→server flows the standard lab's forward wildcard rule carries
 * (destination the server), none of them a probe flow: source ports from
 * 30000, destination ports from 10000 up.
 */
export function wildcardFlows(n: number): FlowKey[] {
  const ports = 65536 - 30000;
  return Array.from({ length: n }, (_, i) => ({ src: CLIENT_IP, dst: SERVER_IP, sport: 30000 + (i % ports), dport: 10000 + Math.floor(i / ports), proto: UDP }));
}

/** `n` flows no moving rule covers (towards 10.0.0.3): they must stay where they are. */
export function bystanderFlows(n: number): FlowKey[] {
  return Array.from({ length: n }, (_, i) => ({ src: CLIENT_IP, dst: '10.0.0.3', sport: 30000 + i, dport: PROBE_DPORT, proto: UDP }));
}

export interface ProbeTraffic {
  start(pps: number): void;
  /** stops, drains, reports per direction; closes the generators and sinks */
  stop(): Promise<{ forward: TrafficReport; reverse: TrafficReport }>;
  close(): void;
}

/** Probes both ways on the generators' flows 0..flows-1, the VNF's stamp checked on each. */
export function probeTraffic(objectsDir: string, lab: OpenedLab['lab'], flows: number): ProbeTraffic {
  const pair = (from: typeof lab.client, to: typeof lab.client): { gen: TrafficGenerator; sink: TrafficSink } => {
    const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname, stamps: true, flows });
    try {
      return { sink, gen: new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows, frameSize: 128, basePort: BASE_PORT, dstPort: PROBE_DPORT }) };
    } catch (e) {
      sink.close();
      throw e;
    }
  };
  const fw = pair(lab.client, lab.server);
  let rv: { gen: TrafficGenerator; sink: TrafficSink };
  try {
    rv = pair(lab.server, lab.client);
  } catch (e) {
    fw.gen.close();
    fw.sink.close();
    throw e;
  }
  const close = (): void => {
    for (const p of [fw, rv]) {
      p.gen.close();
      p.sink.close();
    }
  };
  return {
    start(pps) {
      fw.gen.start(pps);
      rv.gen.start(pps);
    },
    async stop() {
      await Promise.all([fw.gen.stop(), rv.gen.stop()]);
      await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
      return { forward: fw.sink.report(fw.gen.sentPerFlow()), reverse: rv.sink.report(rv.gen.sentPerFlow()) };
    },
    close,
  };
}

/** Where the moved records are after a handover: how many of `flows` each instance holds, and whether B's values are A's. */
export async function stateWhere(dp: OpenedLab['dp'], flows: readonly FlowKey[], imported: readonly FlowStateEntry[]): Promise<{ atNew: number; atOld: number; importedIntact: number }> {
  const sel: FlowSelection = flows.map((flow): RuleMatch => ({ kind: 'exact', flow }));
  const atNew = await dp.exportState('vnf2', 'all');
  const atOld = await dp.exportState('vnf1', 'all');
  const wanted = compileSelection(sel);
  const newByKey = new Map(atNew.filter((e) => wanted(e.flow)).map((e) => [flowKeyString(e.flow), e.value]));
  const importedIntact = imported.filter((e) => newByKey.get(flowKeyString(e.flow))?.equals(e.value) === true).length;
  return { atNew: newByKey.size, atOld: atOld.filter((e) => wanted(e.flow)).length, importedIntact };
}

export interface ManyFlowsRun {
  result: HandoverResult;
  traffic: { forward: TrafficReport; reverse: TrafficReport };
  /** records of the moving flows at B / left at A after the move, and of the imported ones, how many B holds unchanged */
  state: { atNew: number; atOld: number; importedIntact: number };
  /** records the handover was expected to move */
  expectedRecords: number;
  /** the rule action updates the handover made: calls to the switch control and the time in them */
  actions: ActionStats;
  /** bystander records still at A (all of them expected) */
  bystandersAtOld: number;
  bystanders: number;
}

export interface ScenarioOptions {
  objectsDir: string;
  prefix: string;
  /** probe flows per direction under traffic */
  sampleFlows: number;
  /** probes per second per direction */
  pps: number;
  /** records imported at A that no rule moves */
  bystanders?: number;
  /** hide the data plane's setRuleActions: the engine makes one setRuleAction call per rule (as before it existed) */
  perRuleActions?: boolean;
  via?: 'in-process' | 'nodes';
}

export interface ActionStats {
  calls: number;
  updates: number;
  ms: number;
}

/**
 * The data plane's switch control, every rule action update counted and
 * timed; `perRule`: without setRuleActions.
 */
function timedSwitchControl(dp: OpenedLab['dp'], perRule: boolean): { switchControl: SwitchControl; stats: ActionStats } {
  const stats: ActionStats = { calls: 0, updates: 0, ms: 0 };
  const time = async (n: number, p: () => Promise<void>): Promise<void> => {
    const a = performance.now();
    try {
      await p();
    } finally {
      stats.ms += performance.now() - a;
      stats.calls++;
      stats.updates += n;
    }
  };
  const batch = dp.setRuleActions?.bind(dp);
  const switchControl = new Proxy(dp as SwitchControl, {
    get(target, prop) {
      if (prop === 'setRuleAction') return (id: number, a: RuleAction) => time(1, () => target.setRuleAction(id, a));
      if (prop === 'setRuleActions') return perRule || batch === undefined ? undefined : (u: readonly RuleActionUpdate[]) => time(u.length, () => batch(u));
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { switchControl, stats };
}

async function runScenario(
  lab: OpenedLab,
  o: ScenarioOptions,
  rules: readonly number[],
  imported: readonly FlowStateEntry[],
  movingFlows: readonly FlowKey[],
  expectedStateMs: number,
): Promise<ManyFlowsRun> {
  const bystanders = bystanderFlows(o.bystanders ?? 1000).map((f, i) => counterRecord(f, i + 1));
  await lab.dp.importState('vnf1', [...imported, ...bystanders]);
  const traffic = probeTraffic(o.objectsDir, lab.lab, o.sampleFlows);
  try {
    traffic.start(o.pps);
    // every sampled flow has state at A before the move
    await sleep(300);
    const timed = timedSwitchControl(lab.dp, o.perRuleActions === true);
    const engine = new HandoverEngine({ ...localDeployment(lab.dp), switchControl: timed.switchControl }, { mover: new VnfMapStateMover(), timeoutMs: 120_000 });
    const result = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2 * o.pps, expectedStateMs, stateTimeoutMs: 60_000 });
    await sleep(200);
    const report = await traffic.stop();
    const state = await stateWhere(lab.dp, movingFlows, imported);
    const bystanderKeys = compileSelection(bystanders.map((e): RuleMatch => ({ kind: 'exact', flow: e.flow })));
    const bystandersAtOld = (await lab.dp.exportState('vnf1', 'all')).filter((e) => bystanderKeys(e.flow)).length;
    return { result, traffic: report, state, expectedRecords: movingFlows.length, bystandersAtOld, bystanders: bystanders.length, actions: timed.stats };
  } finally {
    traffic.close();
  }
}

/**
 * One handover of 2 × `flowsPerDirection` exact rules (and as many
 * directional flows): the sample's state made by its traffic, the rest imported.
 */
export async function runExactScenario(o: ScenarioOptions & { flowsPerDirection: number }): Promise<ManyFlowsRun> {
  const lab = await openManyFlowsLab({ objectsDir: o.objectsDir, prefix: o.prefix, maxRules: 2 * o.flowsPerDirection + 64, vnfFlows: 2 * o.flowsPerDirection + (o.bystanders ?? 1000) + 1024, ...(o.via === undefined ? {} : { via: o.via }) });
  try {
    const { rules, flows } = await addExactRules(lab.dp, o.flowsPerDirection);
    // the flows beyond the sample: records as if each had seen i+1 packets
    const imported = flows.filter((f) => f.sport >= BASE_PORT + o.sampleFlows).map((f, i) => counterRecord(f, i + 1));
    return await runScenario(lab, o, rules, imported, flows, 50 + flows.length / 50);
  } finally {
    await lab.close();
  }
}

/** One handover of the standard lab's wildcard rules (forward and reverse) carrying `flows` imported flows plus the sample's. */
export async function runWildcardScenario(o: ScenarioOptions & { flows: number }): Promise<ManyFlowsRun> {
  const lab = await openManyFlowsLab({ objectsDir: o.objectsDir, prefix: o.prefix, maxRules: 64, vnfFlows: o.flows + (o.bystanders ?? 1000) + 2 * o.sampleFlows + 1024 });
  try {
    const rules = lab.dp
      .rules()
      .filter((r) => r.action.outPort === 's1-vnf1' || r.action.outPort === 's2-vnf1')
      .map((r) => r.id);
    const imported = wildcardFlows(o.flows).map((f, i) => counterRecord(f, i + 1));
    const sample = Array.from({ length: o.sampleFlows }, (_, i) => [probeFlow('forward', i), probeFlow('reverse', i)]).flat();
    return await runScenario(lab, o, rules, imported, [...imported.map((e) => e.flow), ...sample], 50 + o.flows / 50);
  } finally {
    await lab.close();
  }
}

/** Before/after of the two changes, at the scenario's scale, outside a handover. */
export interface SelectionCost {
  /** ms to test `records` flows against the selection match by match (selects) / compiled once (compileSelection) */
  perMatchMs: number;
  compiledMs: number;
  /** both found the same flows */
  selected: number;
}

export function measureSelection(sel: FlowSelection, flows: readonly FlowKey[]): SelectionCost {
  let a = performance.now();
  let perMatch = 0;
  for (const f of flows) if (selects(sel, f)) perMatch++;
  const perMatchMs = performance.now() - a;
  a = performance.now();
  const matcher = compileSelection(sel);
  let compiled = 0;
  for (const f of flows) if (matcher(f)) compiled++;
  const compiledMs = performance.now() - a;
  if (compiled !== perMatch) throw new Error(`compiled selection found ${compiled} flows, selects ${perMatch}`);
  return { perMatchMs: round(perMatchMs), compiledMs: round(compiledMs), selected: compiled };
}

export interface DeleteCost {
  records: number;
  /** ms to delete them one key per call (as deleteState did) / in BPF_MAP_DELETE_BATCH calls */
  perKeyMs: number;
  batchMs: number;
}

/** Deletes `flows`' records from a real flow_state map (the XDP VNF's object, loaded, not attached) both ways. */
export function measureDelete(objectsDir: string, flows: readonly FlowKey[]): DeleteCost {
  const spec = BpfObjectSpec.open(path.join(objectsDir, 'vnf_counter.bpf.o'));
  spec.setMaxEntries('flow_state', flows.length + 1024);
  const coll = spec.load();
  try {
    const m = coll.map('flow_state');
    const keys = flows.map((f) => sharpFlowKeyCodec.encode(flowKeyToAbi(f)));
    const values = flows.map((f, i) => counterRecord(f, i + 1).value);
    m.updateBatch(keys, values);
    let a = performance.now();
    for (const k of keys) m.delete(k);
    const perKeyMs = performance.now() - a;
    m.updateBatch(keys, values);
    a = performance.now();
    const n = m.deletePresentBatch(keys);
    const batchMs = performance.now() - a;
    if (n !== keys.length) throw new Error(`the batch deleted ${n} of ${keys.length} records`);
    return { records: keys.length, perKeyMs: round(perKeyMs), batchMs: round(batchMs) };
  } finally {
    coll.close();
  }
}

function round(ms: number): number {
  return +ms.toFixed(2);
}

/** The figures `make bench` records, flat. */
export function runFigures(name: string, r: ManyFlowsRun): Record<string, number | string> {
  const out: Record<string, number | string> = {
    [`manyflows.${name}.outcome`]: r.result.outcome,
    [`manyflows.${name}.rules`]: r.result.rules.length,
    [`manyflows.${name}.records`]: r.result.state?.records ?? 0,
    [`manyflows.${name}.durationMs`]: round(r.result.durationMs),
    [`manyflows.${name}.stateMs`]: round(r.result.stateMs),
    [`manyflows.${name}.lost`]: r.traffic.forward.lost + r.traffic.reverse.lost,
    [`manyflows.${name}.stampMismatches`]: r.traffic.forward.stampMismatches + r.traffic.reverse.stampMismatches,
    [`manyflows.${name}.actionCalls`]: r.actions.calls,
    [`manyflows.${name}.actionMs`]: round(r.actions.ms),
  };
  for (const [step, ms] of Object.entries(stepDurations(r.result))) out[`manyflows.${name}.stepMs.${step}`] = round(ms);
  for (const [phase, ms] of Object.entries(r.result.state?.phaseMs ?? {})) out[`manyflows.${name}.moveMs.${phase}`] = round(ms);
  return out;
}

export interface ManyFlowsBenchOptions {
  objectsDir: string;
  /** namespace prefix, unique per run */
  prefix: string;
  /** directional exact flows (= rules) in the one request (default 10,000) */
  exactFlows?: number;
  /** flows the wildcard rule carries, besides the sample's (default 100,000) */
  wildcardFlows?: number;
  progress?: (line: string) => void;
}

export interface ManyFlowsBench {
  exact: ManyFlowsRun;
  /** the exact request again, the engine calling setRuleAction per rule */
  exactPerRule: ManyFlowsRun;
  /** over the node API: the exact request; 2,000 rules batched and one call per rule */
  nodesExact: ManyFlowsRun;
  nodesBatch2k: ManyFlowsRun;
  nodesPerRule2k: ManyFlowsRun;
  wildcard: ManyFlowsRun;
  /** the exact request's selection over its records, and the wildcard's over its records */
  exactSelection: SelectionCost;
  wildcardSelection: SelectionCost;
  /** deleting the wildcard run's records */
  deletion: DeleteCost;
  /** flat figures for results/bench.json */
  figures: Record<string, number | string>;
}

export async function benchManyFlows(o: ManyFlowsBenchOptions): Promise<ManyFlowsBench> {
  const exactFlows = o.exactFlows ?? 10_000;
  const wildFlows = o.wildcardFlows ?? 100_000;
  const sample = { sampleFlows: 16, pps: 1000 };
  const say = (r: ManyFlowsRun, what: string): void =>
    o.progress?.(
      `${what}: ${r.result.outcome} in ${r.result.durationMs.toFixed(0)} ms, ${r.result.state?.records ?? 0} records; ${Object.entries(stepDurations(r.result))
        .map(([s, ms]) => `${s} ${ms.toFixed(1)}`)
        .join(', ')} ms; the move: ${Object.entries(r.result.state?.phaseMs ?? {})
        .map(([s, ms]) => `${s} ${ms.toFixed(1)}`)
        .join(', ')} ms; rule actions: ${r.actions.updates} updates in ${r.actions.calls} calls, ${r.actions.ms.toFixed(1)} ms`,
    );
  const exact = await runExactScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}x-`, flowsPerDirection: Math.ceil(exactFlows / 2), ...sample });
  say(exact, `${exact.result.rules.length} exact rules`);
  // the same with one setRuleAction call per rule, as the engine did before setRuleActions
  const exactPerRule = await runExactScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}p-`, flowsPerDirection: Math.ceil(exactFlows / 2), ...sample, perRuleActions: true });
  say(exactPerRule, `${exactPerRule.result.rules.length} exact rules, one setRuleAction call per rule`);
  // over the node API (a node daemon per switch and instance): the batch at full scale; one call
  // per rule at 2,000 rules only (about 2 ms a call here: 30,000 calls would take a minute)
  const nodeSample = { sampleFlows: 16, pps: 200, via: 'nodes' as const };
  const nodesExact = await runExactScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}n-`, flowsPerDirection: Math.ceil(exactFlows / 2), ...nodeSample });
  say(nodesExact, `over the node API, ${nodesExact.result.rules.length} exact rules`);
  const perRuleFlows = Math.min(1000, Math.ceil(exactFlows / 2));
  const nodesBatch2k = await runExactScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}m-`, flowsPerDirection: perRuleFlows, ...nodeSample });
  say(nodesBatch2k, `over the node API, ${nodesBatch2k.result.rules.length} exact rules`);
  const nodesPerRule2k = await runExactScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}q-`, flowsPerDirection: perRuleFlows, ...nodeSample, perRuleActions: true });
  say(nodesPerRule2k, `over the node API, ${nodesPerRule2k.result.rules.length} exact rules, one SetRuleAction call per rule`);
  const wildcard = await runWildcardScenario({ objectsDir: o.objectsDir, prefix: `${o.prefix}w-`, flows: wildFlows, ...sample });
  say(wildcard, `a wildcard rule pair, ${wildFlows} flows + ${2 * sample.sampleFlows} sampled`);
  // the same selections over the same records, outside the handover
  const exactKeys = Array.from({ length: Math.ceil(exactFlows / 2) }, (_, i) => [probeFlow('forward', i), probeFlow('reverse', i)]).flat();
  const exactSelection = measureSelection(
    exactKeys.map((flow): RuleMatch => ({ kind: 'exact', flow })),
    [...exactKeys, ...bystanderFlows(1000)],
  );
  const wildKeys = wildcardFlows(wildFlows);
  const wildcardSelection = measureSelection(
    [
      { kind: 'wildcard', dst: `${SERVER_IP}/32`, inPort: 's1-client', priority: 1 },
      { kind: 'wildcard', dst: `${CLIENT_IP}/32`, inPort: 's2-server', priority: 1 },
    ],
    [...wildKeys, ...bystanderFlows(1000)],
  );
  const deletion = measureDelete(o.objectsDir, wildKeys);
  o.progress?.(`selection of ${exactKeys.length} exact matches over ${exactKeys.length + 1000} records: match by match ${exactSelection.perMatchMs} ms, compiled ${exactSelection.compiledMs} ms`);
  o.progress?.(`selection of 2 wildcards over ${wildKeys.length + 1000} records: match by match ${wildcardSelection.perMatchMs} ms, compiled ${wildcardSelection.compiledMs} ms`);
  o.progress?.(`deleting ${deletion.records} flow_state records: one key per call ${deletion.perKeyMs} ms, BPF_MAP_DELETE_BATCH ${deletion.batchMs} ms`);
  const figures: Record<string, number | string> = {
    ...runFigures('exact', exact),
    ...runFigures('exactPerRule', exactPerRule),
    ...runFigures('nodes.exact', nodesExact),
    ...runFigures('nodes.exact2k', nodesBatch2k),
    ...runFigures('nodes.exact2kPerRule', nodesPerRule2k),
    ...runFigures('wildcard', wildcard),
    'manyflows.select.exact.perMatchMs': exactSelection.perMatchMs,
    'manyflows.select.exact.compiledMs': exactSelection.compiledMs,
    'manyflows.select.wildcard.perMatchMs': wildcardSelection.perMatchMs,
    'manyflows.select.wildcard.compiledMs': wildcardSelection.compiledMs,
    'manyflows.delete.records': deletion.records,
    'manyflows.delete.perKeyMs': deletion.perKeyMs,
    'manyflows.delete.batchMs': deletion.batchMs,
  };
  return { exact, exactPerRule, nodesExact, nodesBatch2k, nodesPerRule2k, wildcard, exactSelection, wildcardSelection, deletion, figures };
}
