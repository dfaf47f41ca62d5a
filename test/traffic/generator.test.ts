// The natively paced generator (a thread in the addon running tg_tx with
// live frames): exactly the frames asked for, a stop that stops, every probe
// reaching a checking sink through a real veth, and clear errors for bad
// pacing. No speeds asserted (those are in `make bench`).
import t, { type Test } from 'tap';
import { TrafficGenerator, nativeChunk } from '../../src/traffic/generator.js';
import { TrafficSink } from '../../src/traffic/sink.js';
import { BpfCollection } from '../../src/bpf/index.js';
import { testVethPair } from '../helpers/netns.js';
import { objectsDir } from '../helpers/lab.js';
import { programObject } from '../helpers/env.js';
import { sleep } from '../../src/util/mutex.js';

function pair(t: Test, tag: string, flows: number): { gen: TrafficGenerator; sink: TrafficSink } {
  const { nsA, nsB, a, b } = testVethPair(t, tag);
  const sink = new TrafficSink({ objectsDir, netns: nsB, ifname: b.name, flows, stamps: false, eventEvery: 0 });
  t.teardown(() => sink.close());
  const gen = new TrafficGenerator({ objectsDir, netns: nsA, ifname: a.name, srcMac: a.mac!, dstMac: b.mac!, srcIp: '10.99.0.1', dstIp: '10.99.0.2', flows, frameSize: 74, pacing: 'native' });
  t.teardown(() => gen.close());
  return { gen, sink };
}

t.test('sendPaced(n) sends exactly n probes, round robin over the flows, all delivered in order', async (t) => {
  const { gen, sink } = pair(t, 'tgn', 4);
  const n = 10_001;
  await gen.sendPaced(n, 400_000);
  t.equal(gen.sent, n, 'the generator reports n sent');
  t.same(gen.sentPerFlow(), [2501n, 2500n, 2500n, 2500n], 'its per-flow counters add up to n, round robin');
  await sink.drain(n);
  const r = sink.report(gen.sentPerFlow());
  t.match(r, { sent: n, delivered: n, lost: 0, reordered: 0, duplicated: 0, beyondWindow: 0, unchecked: 0 }, 'every probe arrived once, in order');
});

t.test('start() runs until stop(); after stop nothing more is sent', async (t) => {
  const { gen, sink } = pair(t, 'tgs', 2);
  gen.start(200_000);
  t.equal(gen.pacing, 'native');
  while (gen.sent < 5000) await sleep(5);
  await gen.stop();
  const sent = gen.sent;
  t.equal(BigInt(sent), gen.sentPerFlow().reduce((a, b) => a + b, 0n), 'sent matches the kernel-side counters');
  await sleep(50);
  t.equal(gen.sent, sent, 'nothing sent after stop() resolved');
  t.equal(gen.sentPerFlow().reduce((a, b) => a + b, 0n), BigInt(sent), 'nor by the kernel');
  await sink.drain(sent);
  const r = sink.report(gen.sentPerFlow());
  t.match(r, { delivered: sent, lost: 0, reordered: 0, duplicated: 0 });
  // and it starts again where it stopped
  await gen.sendPaced(100, 100_000);
  t.equal(gen.sent, sent + 100);
});

t.test('bad pacing is refused, naming the field and its limit', async (t) => {
  const { gen } = pair(t, 'tgb', 1);
  t.throws(() => gen.start(0), /pps must be a positive number, got 0/);
  await t.rejects(gen.sendPaced(0, 1000), /frames must be a positive integer, got 0/);
  const tx = BpfCollection.load(programObject('bench'));
  t.teardown(() => tx.close());
  const data = Buffer.alloc(60);
  t.throws(() => tx.program('bench_tx').runPaced({ data }, { framesPerSecond: 1000, chunk: 0 }), /chunk must be an integer in 1\.\.1048576, got 0/);
  t.throws(() => tx.program('bench_tx').runPaced({ data }, { framesPerSecond: Infinity, chunk: 1 }), /framesPerSecond must be a positive number/);
  t.throws(() => tx.program('bench_tx').runPaced({ data }, { framesPerSecond: 1, chunk: 1, maxFrames: -1 }), /maxFrames must be a non-negative integer, got -1/);
  t.equal(nativeChunk(1), 1, 'runs of at least one frame');
  t.equal(nativeChunk(1e9), 1024, 'and at most 1024');
});
