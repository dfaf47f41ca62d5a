// Many flows in one handover, in network namespaces under probe traffic on a
// sample of them: 2,000 exact rules (2,000 directional flows) in one request,
// and one wildcard rule pair carrying 20,000 flows; each flow's VNF state
// ends at the new instance and none at the old, records no rule covers stay
// put, and the sampled flows' counters stay continuous. (The full scale,
// 10,000 / 100,000, runs in `sharpctl bench manyflows`.)
import t, { type Test } from 'tap';
import { uniqueName } from '../helpers/env.js';
import { objectsDir } from '../helpers/lab.js';
import { runExactScenario, runWildcardScenario, stepDurations, addExactRules, openManyFlowsLab, counterRecord, wildcardFlows, type ManyFlowsRun } from '../../src/bench/many-flows.js';
import { compileSelection, selects, type FlowSelection, type FlowKey } from '../../src/dataplane/types.js';
import { VnfStateFullError } from '../../src/dataplane/xdp/agents.js';
import { TopologyLimitError } from '../../src/dataplane/xdp/topology.js';
import type { XdpDataPlane } from '../../src/dataplane/xdp/xdp-dataplane.js';
import { Phase } from '../../src/dataplane/types.js';
import { sharpExactRuleCodec, sharpRuleActionCodec } from '../../src/generated/abi.js';
import { u32 } from '../../src/bpf/index.js';

function assertMoved(t: Test, r: ManyFlowsRun): void {
  const h = r.result;
  t.equal(h.outcome, 'completed', `handover ${h.id} completed${h.reason ? ` (${h.reason})` : ''}`);
  t.equal(h.state?.records, r.expectedRecords, `the mover moved ${r.expectedRecords} records`);
  t.equal(r.state.atNew, r.expectedRecords, `vnf2 holds the state of all ${r.expectedRecords} moved flows`);
  t.equal(r.state.atOld, 0, 'vnf1 holds none of them');
  t.ok(r.state.importedIntact > 0, `${r.state.importedIntact} imported records checked`);
  t.equal(r.bystandersAtOld, r.bystanders, `the ${r.bystanders} records no rule covers stayed at vnf1`);
  for (const [dir, rep] of Object.entries(r.traffic)) {
    t.ok(rep.sent > 0, `${dir}: ${rep.sent} probes sent`);
    t.equal(rep.delivered, rep.sent, `${dir}: every probe delivered`);
    t.equal(rep.lost + rep.reordered + rep.duplicated, 0, `${dir}: nothing lost, reordered or duplicated`);
    t.equal(rep.stampMismatches, 0, `${dir}: the VNF's counter equals the sequence number on every probe (state continuous)`);
  }
  t.ok(h.counts.held > 0n, `frames were held at vnf2 during the move (${h.counts.held})`);
  t.equal(h.counts.held, h.counts.released, 'held = released');
  const steps = stepDurations(h);
  t.same(Object.keys(steps), ['arming', 'pre-marking', 'switching', 'draining', 'moving-state', 'releasing', 'cleaning'], 'a time for every step');
  t.comment(`${h.rules.length} rules, ${h.state?.records} records: ${Object.entries(steps).map(([s, ms]) => `${s} ${ms.toFixed(1)}`).join(', ')} ms`);
}

t.test('one request moving 2,000 exact rules with their state (1,000 flows each way, 16 of them under traffic)', async (t) => {
  const r = await runExactScenario({ objectsDir, prefix: `${uniqueName('mfx')}-`, flowsPerDirection: 1000, sampleFlows: 16, pps: 1000 });
  t.equal(r.result.rules.length, 2000);
  // the imported ones, exactly as exported at vnf1
  t.equal(r.state.importedIntact, 2 * (1000 - 16), 'every imported record arrived unchanged');
  assertMoved(t, r);
});

t.test('one wildcard rule pair carrying 20,000 flows with their state (16 each way under traffic)', async (t) => {
  const r = await runWildcardScenario({ objectsDir, prefix: `${uniqueName('mfw')}-`, flows: 20_000, sampleFlows: 16, pps: 1000 });
  t.equal(r.result.rules.length, 2);
  t.equal(r.state.importedIntact, 20_000, 'every imported record arrived unchanged');
  assertMoved(t, r);
});

t.test('the table sizes are fixed at load and their limits are named', async (t) => {
  const lab = await openManyFlowsLab({ objectsDir, prefix: `${uniqueName('mfl')}-`, maxRules: 64, vnfFlows: 100 });
  t.teardown(() => lab.close());
  // the standard lab's 4 rules took ids 1..4, these 58 ids 5..62
  await addExactRules(lab.dp, 29);
  const flow = (sport: number): FlowKey => ({ src: '10.0.0.1', dst: '10.0.0.2', sport, dport: 1, proto: 17 });
  const rule = await lab.dp.addRule({ switch: 's1', match: { kind: 'exact', flow: flow(1) }, action: { outPort: 's1-vnf1', phase: 0, handoverId: 0 } });
  t.equal(rule.id, 63, 'the last id below maxRules fits');
  await t.rejects(
    lab.dp.addRule({ switch: 's1', match: { kind: 'exact', flow: flow(2) }, action: { outPort: 's1-vnf1', phase: 0, handoverId: 0 } }),
    { name: 'RuleError', message: /rule id 64 out of range 1\.\.63 \(switch s1's maxRules is 64\)/ },
    'the next is refused, naming the limit',
  );
  const records = wildcardFlows(101).map((f, i) => counterRecord(f, i + 1));
  await lab.dp.importState('vnf1', records.slice(0, 100));
  const err = await lab.dp.importState('vnf1', records.slice(100)).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof VnfStateFullError, 'a record beyond the flow_state map is refused');
  t.match((err as Error).message, /vnf1: its VNF's flow_state map holds at most 100 flow records \(vnfFlows\)/);
  await lab.dp.deleteState('vnf1', [...records.map((e) => e.flow), { src: '10.9.9.9', dst: '10.9.9.8', sport: 1, dport: 2, proto: 17 }]);
  t.same(await lab.dp.exportState('vnf1', 'all'), [], 'a batch delete with flows the map lacks deletes every one it has');
});

t.test('a table size out of range is refused before anything loads', async (t) => {
  await t.rejects(openManyFlowsLab({ objectsDir, prefix: `${uniqueName('mfl')}-`, maxRules: 0, vnfFlows: 100 }), TopologyLimitError);
  await t.rejects(openManyFlowsLab({ objectsDir, prefix: `${uniqueName('mfl')}-`, maxRules: 64, vnfFlows: 0 }), /instance vnf1: vnfFlows must be an integer in 1\.\.4194304, got 0/);
});

t.test('a compiled selection selects exactly what selects() does', async (t) => {
  const flows: FlowKey[] = [];
  for (let i = 0; i < 400; i++) flows.push({ src: `10.0.${i % 3}.${i % 7}`, dst: `10.1.0.${i % 5}`, sport: 1000 + (i % 11), dport: 9000 + (i % 2), proto: i % 4 === 0 ? 6 : 17 });
  const sels: FlowSelection[] = [
    'all',
    [],
    flows.slice(0, 37).map((flow) => ({ kind: 'exact' as const, flow })),
    [{ kind: 'wildcard', dst: '10.1.0.0/30', priority: 1 }],
    [{ kind: 'wildcard', src: '10.0.1.0/24', sport: 1003, proto: 17, priority: 1 }, { kind: 'exact', flow: flows[5]! }],
    [{ kind: 'wildcard', dport: 9001, priority: 0 }, { kind: 'wildcard', src: '0.0.0.0/0', dst: '10.1.0.4', priority: 2 }],
  ];
  for (const sel of sels) {
    const m = compileSelection(sel);
    const want = flows.filter((f) => selects(sel, f)).length;
    t.equal(flows.filter((f) => m(f)).length, want, `${sel === 'all' ? 'all' : `${sel.length} matches`}: ${want} flows`);
    t.ok(flows.every((f) => m(f) === selects(sel, f)), 'flow by flow the same');
  }
});

t.test('setRuleActions replaces many actions in one call, exact and wildcard; a bad update is refused before any applies', async (t) => {
  const lab = await openManyFlowsLab({ objectsDir, prefix: `${uniqueName('mfa')}-`, maxRules: 256, vnfFlows: 100 });
  t.teardown(() => lab.close());
  const { rules } = await addExactRules(lab.dp, 50);
  const wild = lab.dp.rules().filter((r) => r.match.kind === 'wildcard' && r.action.outPort === 's1-vnf1')[0]!;
  const to = (id: number): string => (lab.dp.getRule(id)!.switch === 's1' ? 's1-vnf2' : 's2-vnf2');
  const ids = [...rules, wild.id];
  const dp = lab.dp as XdpDataPlane;
  await dp.setRuleActions(ids.map((id) => ({ id, action: { outPort: to(id), phase: Phase.PRE, handoverId: 7 } })));
  t.ok(
    ids.every((id) => lab.dp.getRule(id)!.action.outPort === to(id) && lab.dp.getRule(id)!.action.phase === Phase.PRE),
    'the data plane reports every new action',
  );
  // what the switch's tables hold, read back from the kernel
  const s1 = dp.switchObject('s1');
  const exactActions = [...s1.map('rules_exact').entries()].map(([, v]) => sharpRuleActionCodec.decode(sharpExactRuleCodec.decode(v).action));
  t.equal(exactActions.length, 50);
  t.ok(exactActions.every((a) => a.phase === Phase.PRE && a.hid === 7), 'every exact entry of s1 is marked PRE, handover 7');
  t.equal(sharpRuleActionCodec.decode(s1.map('rule_actions').lookup(u32.encode(wild.id))!).phase, Phase.PRE, "the wildcard rule's action too");
  await t.rejects(dp.setRuleActions([{ id: rules[0]!, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } }, { id: rules[1]!, action: { outPort: 'nowhere', phase: Phase.NONE, handoverId: 0 } }]), /no port 'nowhere'/);
  t.equal(lab.dp.getRule(rules[0]!)!.action.phase, Phase.PRE, 'the good update before the bad one was not applied');
});
