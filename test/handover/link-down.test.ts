// Issue 16, defect 2: a VNF-facing link goes down for 0.5 s during a
// handover. The frames the switch redirects into it die in the kernel (veth's
// ndo_xdp_xmit), where no XDP program sees them. They must be counted with
// their reason, the handover must not be called completed, and the run must
// reconcile: sent = delivered + reported, unaccounted = 0, in both directions.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { testLab } from '../helpers/lab.js';
import { wildcardRules } from '../helpers/handovers.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { VnfMapStateMover, DelayedStateMover } from '../../src/handover/state-mover.js';
import { localDeployment, type DataPlane } from '../../src/dataplane/types.js';
import { TrafficAccounting } from '../../src/traffic/accounting.js';
import { netdevDrops } from '../../src/net/netdev-stats.js';
import { sleep } from '../../src/util/mutex.js';

const linkSet = (netns: string, ifname: string, state: 'up' | 'down'): void => void execFileSync('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', ifname, state]);

t.test('the kernel counts what dies behind a redirect: tx_dropped on the port whose peer is down', async (t) => {
  const l = await testLab(t);
  const s1 = l.lab.topology.switches.find((s) => s.name === 's1')!;
  const vnf1 = l.lab.topology.instances.find((i) => i.name === 'vnf1')!;
  const fw = l.forward(1);
  const before = (await l.dp.portCounters('s1')).find((p) => p.port === 's1-vnf1')!;
  linkSet(vnf1.netns!, 'eth0', 'down');
  t.teardown(() => linkSet(vnf1.netns!, 'eth0', 'up'));
  await fw.gen.send(500);
  await sleep(50);
  const after = (await l.dp.portCounters('s1')).find((p) => p.port === 's1-vnf1')!;
  t.equal(after.txPackets - before.txPackets, 500n, 'the switch program redirected all 500 frames');
  t.equal(after.xmitFailed - before.xmitFailed, 500n, 'and the port reports all 500 as not transmitted (xmitFailed)');
  t.equal(netdevDrops(s1.netns).get('p-vnf1')?.txDropped, after.xmitFailed, 'read from the veth\'s tx_dropped');
  t.equal(fw.sink.received, 0, 'none arrived');
});

t.test('a VNF-facing link down for 0.5 s during a handover: lossy, every lost frame counted, unaccounted = 0', async (t) => {
  const l = await testLab(t, { ringCapacity: 8192 });
  const rules = wildcardRules(l);
  const vnf2 = l.lab.topology.instances.find((i) => i.name === 'vnf2')!;
  t.teardown(() => linkSet(vnf2.netns!, 'eth0', 'up'));
  const acc = new TrafficAccounting(localDeployment(l.dp as DataPlane), l.lab.topology, [
    { name: 'fwd', from: 'client', to: 'server' },
    { name: 'rev', from: 'server', to: 'client' },
  ]);
  const engine = new HandoverEngine(l.dp, { mover: new DelayedStateMover(new VnfMapStateMover(), 400) });
  const fw = l.forward(1);
  const rv = l.reverse(1);
  await acc.start();
  fw.gen.start(2000);
  rv.gen.start(2000);
  await sleep(100);
  const ho = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2000, expectedStateMs: 400 });
  // down once the rules point at vnf2 (switch-over is ~15 ms in), up 0.5 s later: after the state move
  await sleep(60);
  linkSet(vnf2.netns!, 'eth0', 'down');
  await sleep(500);
  linkSet(vnf2.netns!, 'eth0', 'up');
  const res = await ho;
  await sleep(100);
  await fw.gen.stop();
  await rv.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  await rv.sink.drain(rv.gen.sent);
  const a = await acc.read([res]);
  const f = fw.sink.report(fw.gen.sentPerFlow(), { accounting: a.directions.get('fwd')! });
  const r = rv.sink.report(rv.gen.sentPerFlow(), { accounting: a.directions.get('rev')! });
  t.not(res.outcome, 'completed', `not completed: ${res.outcome} (${res.reason})`);
  t.equal(res.outcome, 'lossy', 'moved, with loss');
  t.ok(res.counts.dropped > 0n, `the handover counted ${res.counts.dropped} dropped frames`);
  t.ok(res.drops.some((d) => d.where === 's1/s1-vnf2' && d.reason === 'xmitFailed'), 'at s1\'s port towards vnf2, as xmitFailed');
  t.match(res.reason, /s1\/s1-vnf2.*xmitFailed/);
  t.ok(f.sent > f.delivered, `forward lost ${f.sent - f.delivered} frames`);
  for (const [name, x] of [
    ['forward', f],
    ['reverse', r],
  ] as const) {
    t.equal(x.unaccounted, 0, `${name}: sent ${x.sent} = delivered ${x.delivered} + reported ${x.reported} (${JSON.stringify(x.drops)})`);
    t.equal(x.reordered + x.duplicated, 0, `${name}: what was delivered is in order, once`);
  }
  t.equal(a.unattributed.reported, 0, 'every counted drop belongs to a direction');
  t.equal(res.counts.held, res.counts.released, 'held = released');
});
