// Ring buffer events reach JavaScript on the event loop, in order.
import t from 'tap';
import { BpfCollection, RingBufferReader } from '../../src/bpf/index.js';
import { ethernet } from '../../src/net/frame.js';
import { testObject } from '../helpers/env.js';

const frame = ethernet({ dst: '02:00:00:00:00:0b', src: '02:00:00:00:00:0a', etherType: 0x0800, payload: Buffer.alloc(50) });

t.test('events arrive in order through the async iterator', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  const reader = new RingBufferReader(coll.map('fx_events'));
  t.teardown(() => {
    reader.close();
    coll.close();
  });
  const n = 500;
  // on a worker thread, so the event loop is free to deliver while it runs
  const run = coll.program('xdp_emit').runAsync({ data: frame, repeat: n });
  const seqs: bigint[] = [];
  for await (const ev of reader) {
    seqs.push(ev.readBigUInt64LE(0));
    t.equal(ev.readUInt32LE(8), frame.length);
    if (seqs.length === n) break;
  }
  await run;
  t.same(seqs, Array.from({ length: n }, (_, i) => BigInt(i)), `${n} events, numbered 0..${n - 1} in order`);
});

t.test('data events and close', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  const reader = new RingBufferReader(coll.map('fx_events'));
  t.teardown(() => coll.close());
  const got: number[] = [];
  const done = new Promise<void>((resolve) => {
    reader.on('data', (b: Buffer) => {
      got.push(Number(b.readBigUInt64LE(0)));
      if (got.length === 10) resolve();
    });
  });
  coll.program('xdp_emit').run({ data: frame, repeat: 10 });
  await done;
  t.same(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  reader.close();
  t.ok(reader.closed);
  t.equal(reader.consume(), 0, 'a closed reader consumes nothing');
});
