// Programs run through BPF_PROG_TEST_RUN with crafted frames: verdicts,
// rewritten bytes and map side effects, as a table.
import t from 'tap';
import { BpfCollection, BpfObjectSpec, XdpAction, TcAction, u32, u64, type BpfProgram } from '../../src/bpf/index.js';
import { ethernet, macString } from '../../src/net/frame.js';
import { rodataLayouts } from '../../src/generated/abi.js';
import { testObject } from '../helpers/env.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const frame = (etherType: number, payload = Buffer.alloc(46, 0x11)): Buffer => ethernet({ dst: B, src: A, etherType, payload });

interface Case {
  name: string;
  input: Buffer;
  verdict: number;
  check?: (out: Buffer) => void;
}

t.test('XDP fixture verdicts and rewrites', async (t) => {
  const spec = BpfObjectSpec.open(testObject('binding_fixture'));
  spec.setConstants(rodataLayouts['binding_fixture']!, { fx_tail_mark: 0x3c });
  const coll = spec.load();
  t.teardown(() => coll.close());
  const prog = coll.program('xdp_fixture');
  coll.map('fx_progs').update(u32.encode(0), u32.encode(coll.program('xdp_tail').fd));

  const cases: Case[] = [
    {
      name: 'TX EtherType: MACs swapped, bounced',
      input: frame(0x88b5),
      verdict: XdpAction.TX,
      check: (out) => {
        t.equal(macString(out, 0), A, 'destination is the old source');
        t.equal(macString(out, 6), B, 'source is the old destination');
      },
    },
    { name: 'DROP EtherType dropped', input: frame(0x88b6), verdict: XdpAction.DROP },
    {
      name: 'tail call reaches the chained program, which sees the constant set before load',
      input: frame(0x88b7),
      verdict: XdpAction.PASS,
      check: (out) => t.equal(out[14], 0x3c),
    },
    { name: 'anything else passes unchanged', input: frame(0x0800), verdict: XdpAction.PASS, check: (out) => t.same(out, frame(0x0800)) },
  ];
  const before = u64.decode(coll.map('fx_array').lookup(u32.encode(0))!);
  for (const c of cases) {
    t.test(c.name, async () => {
      const r = prog.run({ data: c.input });
      t.equal(r.retval, c.verdict, 'verdict');
      if (c.check) c.check(r.dataOut!);
    });
  }
  t.test('side effect: every full frame was counted once', async () => {
    const after = u64.decode(coll.map('fx_array').lookup(u32.encode(0))!);
    t.equal(after - before, 4n);
  });
});

t.test('the kernel refuses a test run with less than an Ethernet header', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  t.throws(() => coll.program('xdp_fixture').run({ data: Buffer.alloc(10) }), { name: 'BpfError', code: 'EINVAL', op: 'bpf_prog_test_run_opts' });
});

t.test('repeat runs the program N times and reports a duration', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const r = coll.program('xdp_fixture').run({ data: frame(0x88b6), repeat: 1000 });
  t.equal(r.retval, XdpAction.DROP);
  t.ok(r.durationNs >= 0);
  t.equal(u64.decode(coll.map('fx_array').lookup(u32.encode(0))!), 1000n, 'the counter saw 1000 runs');
});

t.test('runAsync runs on a worker thread and resolves with the verdict', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const prog: BpfProgram = coll.program('xdp_fixture');
  const results = await Promise.all([prog.runAsync({ data: frame(0x88b6), repeat: 50 }), prog.runAsync({ data: frame(0x88b5) })]);
  t.same(
    results.map((r) => r.retval),
    [XdpAction.DROP, XdpAction.TX],
  );
});

t.test('context in and out (struct xdp_md) round-trips', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const data = frame(0x88b6);
  const ctx = Buffer.alloc(24);
  ctx.writeUInt32LE(data.length, 4); // data_end
  const r = coll.program('xdp_fixture').run({ data, context: ctx, contextOutSize: 24 });
  t.equal(r.retval, XdpAction.DROP);
  t.equal(r.contextOut?.length, 24);
  t.equal(r.contextOut!.readUInt32LE(4), data.length, 'data_end comes back');
});

t.test('tc program through test-run: verdict and skb mark', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const tc = coll.program('tc_fixture');
  t.equal(tc.run({ data: frame(0x88b6) }).retval, TcAction.SHOT);
  const skb = Buffer.alloc(192); // struct __sk_buff
  const r = tc.run({ data: frame(0x0800), context: skb, contextOutSize: 192 });
  t.equal(r.retval, TcAction.OK);
  t.equal(r.contextOut!.readUInt32LE(8), 0x5a, 'skb->mark set by the program');
});
