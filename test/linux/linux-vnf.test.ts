// End to end: two VNF instances of kind 'linux' (the instance's own stack
// forwards between its interfaces; the agent strips, counts, holds and
// replays into the stack). Probe traffic both ways, handovers back and forth:
// nothing lost, reordered or duplicated. Stamps do not apply (the stack does
// not stamp; the sinks are told so and the report says stampsChecked: false).
import t from 'tap';
import { testLab } from '../helpers/lab.js';
import { wildcardRules, runHandovers, assertClean } from '../helpers/handovers.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { inNetns } from '../../src/net/iproute.js';

t.test('linux instances: handovers back and forth under probe traffic both ways, 0 lost / reordered / duplicated', async (t) => {
  const l = await testLab(t, { vnfType: 'linux', ringCapacity: 8192 });
  const [v1, v2] = l.lab.topology.instances;
  t.equal(v1!.kind, 'linux');
  t.equal(inNetns(v1!.netns!, 'sysctl', ['-n', 'net.ipv4.ip_forward']).trim(), '1', 'the instance namespace forwards');
  t.match(inNetns(v2!.netns!, 'ip', ['route', 'show']), /10\.0\.0\.2 dev eth1/, 'route to the server through side 1');
  const rules = wildcardRules(l);
  // the stack VNF has no per-flow map: vnf-map moves 0 records (the probe flows carry no state in a plain router)
  const run = await runHandovers(l, { flows: 8, pps: 2000, rules, count: 6, mover: new DelayedStateMover(new VnfMapStateMover(), 50), gapMs: 100 });
  await assertClean(t, run, l);
  for (const r of run.reports) t.equal(r.stampsChecked, false, 'stamps were not checked (linux instances do not stamp)');
  const fwd = inNetns(v1!.netns!, 'nstat', ['-az', 'IpForwDatagrams']);
  t.match(fwd, /IpForwDatagrams\s+[1-9]/, 'vnf1 forwarded through its stack');
  t.comment(`sent ${run.reports.map((r) => r.sent).join(' / ')}; held per handover ${run.results.map((h) => h.counts.held).join(', ')}`);
});
