// The sink checks every probe in the kernel (tg_sink into tg_flow_checks):
// crafted probes sent as real frames through a veth (live-frames test runs
// of an XDP_TX program in the sending namespace) are counted exactly, per
// flow: delivered, lost, reordered, duplicated, wrong stamps, probes beyond
// the duplicate window, probes of flows it has no record for.
import t from 'tap';
import { BpfCollection, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { TrafficSink, seqWindowFor } from '../../src/traffic/sink.js';
import { SHARP_TG_MIN_WINDOW, SHARP_TG_MAX_WINDOW, SHARP_TG_SEEN_BUDGET } from '../../src/generated/abi.js';
import { testVethPair } from '../helpers/netns.js';
import { objectsDir } from '../helpers/lab.js';
import { probeFrame } from '../helpers/programs.js';
import { programObject } from '../helpers/env.js';

const frameTo = (mac: string, flow: number, seq: bigint, stamp = seq): Buffer => probeFrame({ flow, seq, stamp }, undefined, { dstMac: mac });

t.test('a gap, a reordered probe, a duplicate and a wrong stamp are each counted once', async (t) => {
  const { nsA, nsB, a, b } = testVethPair(t, 'tgsink');
  const sink = new TrafficSink({ objectsDir, netns: nsB, ifname: b.name, flows: 2 });
  t.teardown(() => sink.close());
  const tx = BpfCollection.load(programObject('bench'));
  t.teardown(() => tx.close());
  const ifindex = ifindexOf(a.name, nsA);
  // one live frame out of veth-a (XDP_TX), into the sink's veth-b
  const send = (frame: Buffer): Promise<unknown> => tx.program('bench_tx').runAsync({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindex }), repeat: 1, liveFrames: true, netns: nsA });

  // flow 0 sends 1..7: 5 never arrives, 3 comes after 4, 4 comes twice, 6 carries stamp 99
  const flow0: [bigint, bigint][] = [[1n, 1n], [2n, 2n], [4n, 4n], [3n, 3n], [4n, 4n], [6n, 99n], [7n, 7n]];
  // flow 1: its third probe is further behind the highest than the window reaches
  const w = BigInt(sink.seqWindow);
  const flow1: bigint[] = [1n, w + 2n, 2n];
  for (const [seq, stamp] of flow0) await send(frameTo(b.mac!, 0, seq, stamp));
  for (const seq of flow1) await send(frameTo(b.mac!, 1, seq));
  // flow 5: the sink keeps records for flows 0 and 1 only
  await send(frameTo(b.mac!, 5, 1n));
  await sink.drain(flow0.length + flow1.length + 1);

  const r = sink.report([7n, w + 2n]);
  t.equal(sink.received, 11, 'every probe reached the sink');
  t.same(
    r.flows[0],
    { flow: 0, sent: 7n, delivered: 6, lost: 1, reordered: 1, duplicated: 1, stampMismatches: 1 },
    'flow 0: 6 distinct delivered, 5 lost, 3 reordered, 4 duplicated, one stamp wrong',
  );
  t.equal(r.flows[1]!.delivered, 3, 'flow 1: all three delivered');
  t.equal(r.flows[1]!.reordered, 1, 'flow 1: the old one counts as reordered');
  t.equal(r.beyondWindow, 1, 'and as beyond the window: whether it was a duplicate is not known');
  t.equal(r.unchecked, 1, 'the probe of flow 5 is counted as unchecked');
  t.equal(r.seqWindow, sink.seqWindow);
  t.equal(r.marked, 0);
});

t.test('stamps: false reports no stamp mismatches, whatever the stamps say', async (t) => {
  const { nsA, nsB, a, b } = testVethPair(t, 'tgstamp');
  const sink = new TrafficSink({ objectsDir, netns: nsB, ifname: b.name, flows: 1, stamps: false, eventEvery: 0 });
  t.teardown(() => sink.close());
  const tx = BpfCollection.load(programObject('bench'));
  t.teardown(() => tx.close());
  const frame = frameTo(b.mac!, 0, 1n, 0n);
  await tx.program('bench_tx').runAsync({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf(a.name, nsA) }), repeat: 1, liveFrames: true, netns: nsA });
  await sink.drain(1);
  const r = sink.report([1n]);
  t.equal(r.delivered, 1);
  t.equal(r.stampMismatches, 0);
  t.equal(r.stampsChecked, false);
  t.equal(sink.events, 0, 'eventEvery 0: no events, the probe was still checked');
});

t.test('the duplicate window shrinks with the flows, within its bounds', async (t) => {
  t.equal(seqWindowFor(1), SHARP_TG_MAX_WINDOW);
  t.equal(seqWindowFor(128), SHARP_TG_SEEN_BUDGET / 128);
  t.equal(seqWindowFor(4096), SHARP_TG_MIN_WINDOW, 'never below the minimum');
  for (const f of [1, 3, 100, 1000]) t.equal(Math.log2(seqWindowFor(f)) % 1, 0, `a power of two for ${f} flows`);
});

t.test('bad sink options name the field and its limit', async (t) => {
  t.throws(() => new TrafficSink({ objectsDir, netns: 'none', ifname: 'none', flows: 0 }), /flows must be an integer in 1\.\.4096, got 0/);
  t.throws(() => new TrafficSink({ objectsDir, netns: 'none', ifname: 'none', eventEvery: -1 }), /eventEvery must be an integer in 0\.\./);
});
