// The capture hook of the switch (ebpf/include/capture.h) under
// BPF_PROG_TEST_RUN, read through src/capture/tap.ts: off it writes nothing;
// on it records each decision with its verdict and the bytes as they leave;
// the kernel filters (flow either way round, rule, handover, port,
// direction) leave frames out and count them; a full ring loses records,
// counted, never a frame; and the program's verdicts are the same in all
// three states.
import t from 'tap';
import { XdpAction, u32 } from '../../src/bpf/index.js';
import { SHARP_SHIM_LEN } from '../../src/generated/abi.js';
import { CaptureTap, kernelConfig, readCaptureCounts, type CaptureTarget, type CapturedFrame } from '../../src/capture/tap.js';
import { checkCaptureRequest, parseFlowFilter, CaptureRequestError, type CaptureRequest } from '../../src/capture/filter.js';
import { probeFrame, FLOW, type FlowAddr } from '../helpers/programs.js';
import { loadCaptureSwitch, OTHER } from '../helpers/capture.js';

const request = (r: Partial<CaptureRequest> = {}): CaptureRequest => checkCaptureRequest({ snaplen: 1540, count: 0, durationMs: 0, ...r });

/** Captures what `body` makes the switch do, with request r. */
function capture(target: CaptureTarget, r: CaptureRequest, body: () => void): { frames: CapturedFrame[]; counts: ReturnType<CaptureTap['counts']> } {
  const frames: CapturedFrame[] = [];
  const tap = CaptureTap.start(target, r, (f) => frames.push(f))!;
  body();
  tap.drain();
  return { frames, counts: tap.stop() };
}

t.test('off: nothing is written, verdicts as always', async (t) => {
  const { coll, run } = loadCaptureSwitch(t);
  const before = readCaptureCounts(coll);
  t.equal(run(probeFrame({ seq: 1n })).retval, XdpAction.REDIRECT);
  t.same(readCaptureCounts(coll), before, 'no record, no filtered count, no ring-full count');
});

t.test('on: one record per decision, bytes as they leave, with verdict, rule, handover and ports', async (t) => {
  const { target, run } = loadCaptureSwitch(t);
  let marked!: Buffer;
  let plain!: Buffer;
  let unruled!: Buffer;
  const { frames, counts } = capture(target, request(), () => {
    marked = run(probeFrame({ seq: 1n })).out;
    plain = run(probeFrame({ seq: 2n }, OTHER)).out;
    unruled = probeFrame({ seq: 3n }, { ...FLOW, dstPort: 1 });
    t.equal(run(unruled).retval, XdpAction.DROP, 'no rule: dropped');
  });
  t.equal(frames.length, 3);
  t.equal(counts.captured, 3n);
  t.equal(counts.ringFull, 0n);
  t.match(frames[0], { program: 'switch', object: 'sw', port: 'sw-vnf1', inPort: 'sw-client', direction: 'out', verdict: 'marked-pre', ruleId: 1, handoverId: 7 });
  t.same(frames[0]!.data, marked, 'the marked frame with its shim, as it leaves');
  t.equal(frames[0]!.data.readUInt16BE(12), 0x821c);
  t.equal(frames[0]!.origLen, probeFrame({ seq: 1n }).length + SHARP_SHIM_LEN);
  t.match(frames[1], { port: 'sw-vnf1', direction: 'out', verdict: 'forwarded', ruleId: 2 });
  t.notOk(frames[1]!.handoverId, 'unmarked: no handover');
  t.same(frames[1]!.data, plain);
  t.match(frames[2], { port: 'sw-client', direction: 'in', verdict: 'dropped', reason: 'no-rule' });
  t.same(frames[2]!.data, unruled, 'a dropped frame as it arrived');
  t.ok(frames[0]!.monoNs <= frames[1]!.monoNs && frames[1]!.monoNs <= frames[2]!.monoNs, 'timestamps in decision order');
});

t.test('the snap length cuts the bytes, not the length', async (t) => {
  const { target, run } = loadCaptureSwitch(t);
  const { frames } = capture(target, request({ snaplen: 20 }), () => void run(probeFrame({ seq: 1n })));
  t.equal(frames[0]!.data.length, 20);
  t.equal(frames[0]!.origLen, probeFrame({ seq: 1n }).length + SHARP_SHIM_LEN);
});

t.test('the kernel filters', async (t) => {
  const { target, run } = loadCaptureSwitch(t);
  const reverse: FlowAddr = { srcIp: FLOW.dstIp, dstIp: FLOW.srcIp, srcPort: FLOW.dstPort, dstPort: FLOW.srcPort };
  const traffic = (): void => {
    run(probeFrame({ seq: 1n })); // FLOW, rule 1, hid 7, out sw-vnf1
    run(probeFrame({ seq: 2n }, OTHER)); // rule 2, out sw-vnf1
    run(probeFrame({ seq: 3n }, reverse)); // no rule: dropped at sw-client
  };
  const seen = (r: Partial<CaptureRequest>): { seqs: bigint[]; filtered: bigint } => {
    const { frames, counts } = capture(target, request(r), traffic);
    return { seqs: frames.map((f) => f.data.readBigUInt64BE(42 + 8 + (f.data.readUInt16BE(12) === 0x821c ? SHARP_SHIM_LEN : 0))), filtered: counts.filtered };
  };
  t.same(seen({ flow: parseFlowFilter(`${FLOW.srcIp}:${FLOW.srcPort}>${FLOW.dstIp}:${FLOW.dstPort}/udp`) }), { seqs: [1n, 3n], filtered: 1n }, 'a flow, either way round');
  t.same(seen({ flow: parseFlowFilter(`*:${OTHER.srcPort}>*`) }), { seqs: [2n], filtered: 2n }, 'one field of the 5-tuple');
  t.same(seen({ rule: 2 }), { seqs: [2n], filtered: 2n }, 'a rule');
  t.same(seen({ handover: 7 }), { seqs: [1n], filtered: 2n }, 'a handover');
  t.same(seen({ direction: 'in' }), { seqs: [3n], filtered: 2n }, 'direction in: where frames stop');
  t.same(seen({ port: 'sw-vnf1' }), { seqs: [1n, 2n], filtered: 1n }, 'a port: frames that leave by it');
  t.same(seen({ port: 'sw-client', direction: 'out' }), { seqs: [1n, 2n], filtered: 1n }, 'a port and out: frames that came in by it and left');
  t.same(seen({ handover: 7, direction: 'in' }), { seqs: [], filtered: 3n }, 'filters combine (and)');
  t.equal(kernelConfig(target, request({ port: 'elsewhere' })), undefined, "another object's port: this object is not switched on");
});

t.test('a full ring loses records, counted; every frame still takes its verdict', async (t) => {
  // 16 KiB hold ~100 records of a 100-byte frame: far fewer than the run makes
  const { coll, target, run } = loadCaptureSwitch(t, 16384);
  // unmarked: repeated test runs reuse one buffer, which a shim would grow each time
  const frame = probeFrame({ seq: 1n }, OTHER);
  const runs = 5000;
  const frames: CapturedFrame[] = [];
  const tap = CaptureTap.start(target, request(), (f) => frames.push(f))!;
  const r = run(frame, 'p0', runs);
  t.equal(r.retval, XdpAction.REDIRECT, 'the last of the repeated runs was redirected as always');
  const counts = tap.stop();
  t.ok(counts.ringFull > 0n, `records lost to the full ring are counted (${counts.ringFull})`);
  t.equal(counts.captured + counts.ringFull, BigInt(runs), 'every decision is a record or a counted loss');
  t.equal(BigInt(frames.length), counts.captured, 'every record written was read');
  const stats = coll.map('port_stats').lookupPerCpu(u32.encode(1))!.reduce((a, b) => a + b.readBigUInt64LE(16), 0n);
  t.equal(stats, BigInt(runs), 'tx count: all frames forwarded, none held back by the capture');
});

t.test('requests out of range name the field and the limit', async (t) => {
  const bad = (r: Partial<CaptureRequest>, field: string, msg: RegExp): void => {
    t.throws(() => checkCaptureRequest({ snaplen: 64, count: 0, durationMs: 0, ...r } as CaptureRequest), CaptureRequestError);
    try {
      checkCaptureRequest({ snaplen: 64, count: 0, durationMs: 0, ...r } as CaptureRequest);
    } catch (e) {
      t.equal((e as CaptureRequestError).field, field);
      t.match((e as Error).message, msg);
    }
  };
  bad({ snaplen: 0 }, 'snaplen', /snaplen 0 out of range 1\.\.1540/);
  bad({ snaplen: 2000 }, 'snaplen', /1\.\.1540/);
  bad({ handover: 16384 }, 'handover', /handover 16384 out of range 1\.\.16383/);
  bad({ rule: 0 }, 'rule', /rule 0 out of range/);
  bad({ count: -1 }, 'count', /count -1/);
  bad({ flow: { sport: 70000 } }, 'flow.sport', /flow\.sport 70000 out of range 1\.\.65535/);
  bad({ flow: { src: '10.0.0.256' } }, 'flow.src', /not an IPv4 address/);
  t.throws(() => parseFlowFilter('10.0.0.1'), /give the two ends separated by '>'/);
  t.throws(() => parseFlowFilter('10.0.0.1>10.0.0.2/sctpx'), /protocol 'sctpx'/);
  t.same(parseFlowFilter('10.0.1.1:20000>10.0.2.1:9000/udp'), { src: '10.0.1.1', sport: 20000, dst: '10.0.2.1', dport: 9000, proto: 17 });
  t.same(parseFlowFilter('*>*:9000'), { dport: 9000 });
});
