// Issue 16: frames a release's replay loses in the kernel. The release
// replays held frames with a live-frames BPF_PROG_TEST_RUN; a frame whose
// redirect the kernel refuses there (its way out went down, or cannot take
// it) is freed by test_run with no device counter. The agents count them
// through the xdp_redirect_err tracepoint, as redirectFailed of the
// interface the replay ran on, so such a handover is lossy and every run
// still reconciles: sent = delivered + reported.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { testLab, objectsDir } from '../helpers/lab.js';
import { wildcardRules } from '../helpers/handovers.js';
import { testNetns } from '../helpers/netns.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { VnfMapStateMover, DelayedStateMover } from '../../src/handover/state-mover.js';
import { localDeployment, type DataPlane } from '../../src/dataplane/types.js';
import { TrafficAccounting } from '../../src/traffic/accounting.js';
import { ReplayLossCounter } from '../../src/dataplane/xdp/replay-losses.js';
import { BpfObjectSpec, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth } from '../../src/net/iproute.js';
import { udpFrame } from '../../src/net/frame.js';
import { sleep } from '../../src/util/mutex.js';

const ip = (netns: string, ...args: string[]): void => void execFileSync('ip', ['netns', 'exec', netns, 'ip', ...args]);

t.test('a live-frames run whose frames the kernel refuses: each one counted, for the watched program and its interface only', async (t) => {
  const ns = testNetns(t, 'rl');
  createVeth({ name: 'a0', netns: ns }, { name: 'b0', netns: ns });
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  // a veth takes redirected frames only when its peer runs XDP: b0 counts and drops them
  const sinkLink = bench.program('bench_sink').attachXdp('b0', { netns: ns });
  t.teardown(() => sinkLink.close());
  const counter = ReplayLossCounter.load(objectsDir);
  t.teardown(() => counter.close());
  const tx = bench.program('bench_tx'); // returns XDP_TX: in a test run, a redirect back out of the ingress interface
  const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(60), udpChecksum: false });
  const a0 = ifindexOf('a0', ns);
  const run = (n: number): Promise<unknown> => tx.runAsync({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: a0 }), repeat: n, liveFrames: true, netns: ns });

  // unwatched: not counted (another program's losses are its own counters' business)
  ip(ns, 'link', 'set', 'a0', 'mtu', '68');
  await run(100);
  t.equal(counter.refused(tx, a0), 0n, 'an unwatched program counts nothing');

  counter.watch(tx);
  await run(250);
  t.equal(counter.refused(tx, a0), 250n, 'every frame refused (longer than the MTU) is counted');
  ip(ns, 'link', 'set', 'a0', 'mtu', '1500');
  await run(50);
  t.equal(counter.refused(tx, a0), 250n, 'frames the interface took are not');
  ip(ns, 'link', 'set', 'a0', 'down');
  await run(30);
  t.equal(counter.refused(tx, a0), 280n, 'an interface that is down refuses them too: counted');
  t.equal(counter.refused(tx, ifindexOf('b0', ns)), 0n, 'per interface');
  counter.unwatch(tx);
});

t.test('a handover whose replay is refused by the kernel: lossy, counted at the instance, unaccounted = 0', async (t) => {
  const l = await testLab(t, { ringCapacity: 8192 });
  const rules = wildcardRules(l);
  const vnf2 = l.lab.topology.instances.find((i) => i.name === 'vnf2')!;
  // frames held at vnf2 come in on eth0 and leave, after the VNF, by eth1: an MTU below
  // their size makes the kernel refuse each redirect, while the link stays up (the
  // release's down-link check passes, as it would for a link going down during the run)
  const outIface = vnf2.ifaces[1];
  t.teardown(() => ip(vnf2.netns!, 'link', 'set', outIface, 'mtu', '1500'));
  const acc = new TrafficAccounting(localDeployment(l.dp as DataPlane), l.lab.topology, [{ name: 'fwd', from: 'client', to: 'server' }]);
  const engine = new HandoverEngine(l.dp, { mover: new DelayedStateMover(new VnfMapStateMover(), 300) });
  const fw = l.forward(1);
  await acc.start();
  fw.gen.start(2000);
  await sleep(100);
  const before = (await l.dp.interfaceDrops('vnf2')).find((d) => d.side === 0)!;
  const res = await engine.handover({
    rules,
    from: 'vnf1',
    to: 'vnf2',
    expectedPps: 2000,
    expectedStateMs: 300,
    onEvent: (ev) => {
      // B holds the moved frames now; the state move takes 300 ms
      if (ev.step === 'moving-state') ip(vnf2.netns!, 'link', 'set', outIface, 'mtu', '68');
    },
  });
  ip(vnf2.netns!, 'link', 'set', outIface, 'mtu', '1500');
  await sleep(100);
  await fw.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  const after = (await l.dp.interfaceDrops('vnf2')).find((d) => d.side === 0)!;
  const a = await acc.read([res]);
  const f = fw.sink.report(fw.gen.sentPerFlow(), { accounting: a.directions.get('fwd')! });
  t.ok(res.counts.held > 0n, `vnf2 held ${res.counts.held} frames`);
  t.equal(res.counts.released, res.counts.held, 'and the agent replayed all of them');
  t.ok(after.redirectFailed - before.redirectFailed >= res.counts.held, `the kernel refused them, counted at vnf2/${before.iface} (${after.redirectFailed - before.redirectFailed} ≥ ${res.counts.held})`);
  t.equal(res.outcome, 'lossy', `lossy, not completed: ${res.reason}`);
  t.match(res.reason, /vnf2\/eth0.*redirectFailed|redirectFailed.*vnf2/);
  t.ok(f.sent > f.delivered, `forward lost ${f.sent - f.delivered} frames`);
  t.equal(f.unaccounted, 0, `sent ${f.sent} = delivered ${f.delivered} + reported ${f.reported} (${JSON.stringify(f.drops)})`);
  t.equal(f.reordered + f.duplicated, 0, 'what was delivered is in order, once');
});
