// The example VNF (ebpf/vnf_counter.bpf.c) as a table: each case loads a
// fresh object, optionally imports flow state, runs frames through
// BPF_PROG_TEST_RUN arriving on loopback (ifindex 1 of this namespace: the
// vnf_tx devmap needs a real device, and a non-live test run transmits
// nothing), and checks verdicts, output bytes (the stamp, the checksum),
// every flow_state entry and the VNF's counters (per-CPU values summed).
import t, { type Test } from 'tap';
import { BpfObjectSpec, XdpAction, u32, xdpMd, MapUpdate, type BpfCollection } from '../../src/bpf/index.js';
import { sharpFlowKeyCodec, sharpVnfFlowStateCodec, sharpVnfStatsCodec, sharpProbeCodec, type SharpVnfStats } from '../../src/generated/abi.js';
import { checksumsValid, ipv4Number, onesSum, IPPROTO_TCP, IPPROTO_UDP } from '../../src/net/frame.js';
import { programObject } from '../helpers/env.js';
import {
  FLOW,
  probeFrame,
  plainUdp,
  probePayload,
  otherFrame,
  rawIpv4,
  withShim,
  sumPerCpu,
  counters,
  ETH_P_ARP,
  STAMP_OFF,
  UDP_CSUM_OFF,
  PAYLOAD_OFF,
  type FlowAddr,
} from '../helpers/programs.js';

const LO = 1;
const REV: FlowAddr = { srcIp: FLOW.dstIp, dstIp: FLOW.srcIp, srcPort: FLOW.dstPort, dstPort: FLOW.srcPort };
const OTHER_SPORT: FlowAddr = { ...FLOW, srcPort: FLOW.srcPort + 1 };

interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}
const key = (a: FlowAddr, proto = IPPROTO_UDP): Flow => ({ src: a.srcIp, dst: a.dstIp, sport: a.srcPort, dport: a.dstPort, proto });
const F = key(FLOW);
type FlowState = [Flow, { packets: bigint; bytes: bigint }];

interface Setup {
  /** vnf_ports[lo] (default: slot 0); null: no entry */
  route?: number | null;
  /** vnf_tx slots that point at lo (default [0]) */
  tx?: number[];
  /** flow_state imported before the run */
  flows?: FlowState[];
  /** flow_state max_entries */
  maxFlows?: number;
}

interface Step {
  input: Buffer;
  verdict: number;
  /** expected output (default: the input unchanged) */
  output?: Buffer;
}

interface Case {
  name: string;
  setup?: Setup;
  steps: Step[];
  /** the whole flow_state after the run */
  flows: FlowState[];
  stats: Partial<Record<keyof SharpVnfStats, bigint>>;
  extra?: (t: Test, outs: Buffer[]) => void;
}

const probe = (seq: number, stamp: number | bigint = 0, flow: FlowAddr = FLOW, extra: Parameters<typeof probeFrame>[2] = {}): Buffer => probeFrame({ seq: BigInt(seq), flow: 1, stamp: BigInt(stamp) }, flow, extra);
const L = BigInt(probe(1).length);
const R = XdpAction.REDIRECT;

/** a probe whose checksum after stamping 1 computes to 0 (sent as 0xFFFF): tx_ns absorbs the difference */
function zeroChecksumProbe(stamp: bigint): { input: Buffer; output: Buffer } {
  const f = probeFrame({ seq: 1n, flow: 1, stamp });
  const seg = Buffer.from(f.subarray(34));
  seg.writeUInt16BE(0, 6);
  const pseudo = Buffer.alloc(12);
  f.copy(pseudo, 0, 26, 34);
  pseudo[9] = IPPROTO_UDP;
  pseudo.writeUInt16BE(seg.length, 10);
  const s = onesSum(seg, onesSum(pseudo));
  const txNs = BigInt(0xffff - s);
  return { input: probeFrame({ seq: 1n, flow: 1, stamp: 0n, txNs }), output: probeFrame({ seq: 1n, flow: 1, stamp, txNs }) };
}
const zero = zeroChecksumProbe(1n);

/**
 * A probe whose incremental checksum update needs both folds of the 32-bit
 * sum: stamp 0 replaced by all ones (8 words of 0xFFFF added) on a frame
 * whose checksum, as the program reads it (a little-endian u16), is 0xFFFE.
 * tx_ns absorbs the difference to make the checksum bytes FE FF.
 */
function doubleFoldProbe(): { input: Buffer; output: Buffer } {
  const f = probeFrame({ seq: 1n, flow: 1, stamp: 0n, txNs: 0n });
  const seg = Buffer.from(f.subarray(34));
  seg.writeUInt16BE(0, 6);
  const pseudo = Buffer.alloc(12);
  f.copy(pseudo, 0, 26, 34);
  pseudo[9] = IPPROTO_UDP;
  pseudo.writeUInt16BE(seg.length, 10);
  const s0 = onesSum(seg, onesSum(pseudo));
  // wanted: checksum 0xFEFF = ~0x0100, i.e. the sum with tx_ns' last word w is 0x0100
  const w = s0 <= 0x0100 ? 0x0100 - s0 : 0x0100 + 0xffff - s0;
  const txNs = BigInt(w);
  return { input: probeFrame({ seq: 1n, flow: 1, stamp: 0n, txNs }), output: probeFrame({ seq: 1n, flow: 1, stamp: 0xffffffffffffffffn, txNs }) };
}
const fold = doubleFoldProbe();

/** TCP segment whose payload is a probe (a VNF stamps UDP probes only) */
const tcpProbe = rawIpv4({ protocol: IPPROTO_TCP, l4: Buffer.concat([Buffer.from([0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0x10, 0, 0, 0, 0, 0]), probePayload({ seq: 1n })]) });
/** non-first fragment whose bytes look like a UDP header + probe */
const fragProbe = rawIpv4({ protocol: IPPROTO_UDP, fragOff: 100, l4: probe(1).subarray(34) });
/** UDP header with a length field too short for a probe, though the bytes are there */
const shortLenField = ((): Buffer => {
  const f = probe(1);
  f.writeUInt16BE(8 + 31, 38);
  return f;
})();
/** IPv4 with 4 bytes of options: the stamp sits 4 bytes further */
const withOptions = (stamp: number | bigint): Buffer => rawIpv4({ protocol: IPPROTO_UDP, options: Buffer.from([1, 1, 1, 1]), l4: probe(1, stamp).subarray(34) });

const cases: Case[] = [
  {
    name: 'first probe of a flow: counter 1 stamped (big endian, payload offset 16), UDP checksum updated, redirected',
    steps: [{ input: probe(1), verdict: R, output: probe(1, 1) }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => {
      t.equal(out!.readBigUInt64BE(STAMP_OFF), 1n, 'stamp bytes 00 00 00 00 00 00 00 01');
      t.equal(sharpProbeCodec.decode(out!, PAYLOAD_OFF).stamp, 1n, 'the generated probe codec reads the same stamp');
      t.ok(checksumsValid(out!), 'checksums valid');
      t.not(out!.readUInt16BE(UDP_CSUM_OFF), probe(1).readUInt16BE(UDP_CSUM_OFF), 'the checksum changed with the stamp');
    },
  },
  {
    name: 'the counter increments per packet: stamps 1, 2, 3',
    steps: [1, 2, 3].map((i) => ({ input: probe(i), verdict: R, output: probe(i, i) })),
    flows: [[F, { packets: 3n, bytes: 3n * L }]],
    stats: { processed: 3n, stamped: 3n },
    extra: (t, outs) => t.ok(outs.every((o) => checksumsValid(o)), 'checksums valid on every output'),
  },
  {
    name: 'the stamp overwrites what the sender put there (0xDEADBEEF01020304 -> 1), checksum still valid',
    steps: [{ input: probe(1, 0xdeadbeef01020304n), verdict: R, output: probe(1, 1) }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => {
      t.equal(out!.readBigUInt64BE(STAMP_OFF), 1n);
      t.ok(checksumsValid(out!), 'checksums valid');
    },
  },
  {
    name: 'directional keys: the reverse direction has its own counter',
    steps: [
      { input: probe(1), verdict: R, output: probe(1, 1) },
      { input: probe(2), verdict: R, output: probe(2, 2) },
      { input: probe(1, 0, REV), verdict: R, output: probe(1, 1, REV) },
      { input: probe(3), verdict: R, output: probe(3, 3) },
      { input: probe(2, 0, REV), verdict: R, output: probe(2, 2, REV) },
    ],
    flows: [
      [F, { packets: 3n, bytes: 3n * L }],
      [key(REV), { packets: 2n, bytes: 2n * L }],
    ],
    stats: { processed: 5n, stamped: 5n },
  },
  {
    name: 'another source port is another flow',
    steps: [
      { input: probe(1), verdict: R, output: probe(1, 1) },
      { input: probe(1, 0, OTHER_SPORT), verdict: R, output: probe(1, 1, OTHER_SPORT) },
    ],
    flows: [
      [F, { packets: 1n, bytes: L }],
      [key(OTHER_SPORT), { packets: 1n, bytes: L }],
    ],
    stats: { processed: 2n, stamped: 2n },
  },
  {
    name: 'UDP checksum 0 (none) stays 0; the stamp is still written',
    steps: [{ input: probe(1, 0, FLOW, { udpChecksum: false }), verdict: R, output: probe(1, 1, FLOW, { udpChecksum: false }) }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => t.equal(out!.readUInt16BE(UDP_CSUM_OFF), 0, 'checksum field 0'),
  },
  {
    name: 'a checksum that computes to 0 after stamping is sent as 0xFFFF (RFC 768)',
    steps: [{ input: zero.input, verdict: R, output: zero.output }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => {
      t.not(zero.input.readUInt16BE(UDP_CSUM_OFF), 0, 'the input has a checksum');
      t.equal(out!.readUInt16BE(UDP_CSUM_OFF), 0xffff, 'checksum field 0xFFFF');
      t.ok(checksumsValid(out!), 'and it verifies');
    },
  },
  {
    name: 'checksum stays valid when the stamp crosses 16-bit words (imported 0x0000FFFFFFFFFFFF -> 0x0001000000000000)',
    setup: { flows: [[F, { packets: 0xffffffffffffn, bytes: 5n }]] },
    steps: [{ input: probe(1, 0x1234), verdict: R, output: probe(1, 0x1000000000000n) }],
    flows: [[F, { packets: 0x1000000000000n, bytes: 5n + L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => t.ok(checksumsValid(out!), 'checksums valid'),
  },
  {
    name: 'checksum update that needs the second fold of its sum (stamp 0 -> all ones, checksum bytes FE FF)',
    setup: { flows: [[F, { packets: 0xfffffffffffffffen, bytes: 0n }]] },
    steps: [{ input: fold.input, verdict: R, output: fold.output }],
    flows: [[F, { packets: 0xffffffffffffffffn, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => {
      t.equal(fold.input.readUInt16BE(UDP_CSUM_OFF), 0xfeff, 'the input checksum is FE FF');
      t.ok(checksumsValid(out!), 'checksums valid');
    },
  },
  {
    name: 'state import: a flow_state entry written from TypeScript continues (41 -> next stamp 42)',
    setup: { flows: [[F, { packets: 41n, bytes: 1000n }]] },
    steps: [
      { input: probe(42), verdict: R, output: probe(42, 42) },
      { input: probe(43), verdict: R, output: probe(43, 43) },
    ],
    flows: [[F, { packets: 43n, bytes: 1000n + 2n * L }]],
    stats: { processed: 2n, stamped: 2n },
  },
  {
    name: 'state import of the reverse direction leaves the forward counter alone',
    setup: { flows: [[key(REV), { packets: 100n, bytes: 0n }]] },
    steps: [
      { input: probe(1), verdict: R, output: probe(1, 1) },
      { input: probe(1, 0, REV), verdict: R, output: probe(1, 101, REV) },
    ],
    flows: [
      [F, { packets: 1n, bytes: L }],
      [key(REV), { packets: 101n, bytes: L }],
    ],
    stats: { processed: 2n, stamped: 2n },
  },
  {
    name: 'non-probe UDP (no magic): counted, payload and checksum untouched',
    steps: [{ input: probeFrame({ seq: 1n, magic: 0x53485251 }), verdict: R }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n },
  },
  {
    name: 'UDP payload shorter than a probe (31 bytes starting with the magic): counted, not stamped',
    steps: [{ input: plainUdp(probePayload({ seq: 1n }).subarray(0, 31)), verdict: R }],
    flows: [[F, { packets: 1n, bytes: L - 1n }]],
    stats: { processed: 1n },
  },
  {
    name: 'UDP length field too short for a probe (the bytes are there): not stamped',
    steps: [{ input: shortLenField, verdict: R }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n },
  },
  {
    name: 'UDP without payload: counted, not stamped',
    steps: [{ input: plainUdp(Buffer.alloc(0)), verdict: R }],
    flows: [[F, { packets: 1n, bytes: 42n }]],
    stats: { processed: 1n },
  },
  {
    name: 'TCP carrying probe bytes: counted under its TCP key, not stamped',
    steps: [{ input: tcpProbe, verdict: R }],
    flows: [[{ ...F, dport: 9000, proto: IPPROTO_TCP }, { packets: 1n, bytes: BigInt(tcpProbe.length) }]],
    stats: { processed: 1n },
  },
  {
    name: 'non-first fragment: counted under ports 0, not stamped',
    steps: [{ input: fragProbe, verdict: R }],
    flows: [[{ ...F, sport: 0, dport: 0 }, { packets: 1n, bytes: BigInt(fragProbe.length) }]],
    stats: { processed: 1n },
  },
  {
    name: 'IPv4 options: the stamp is found after them',
    steps: [{ input: withOptions(0), verdict: R, output: withOptions(1) }],
    flows: [[F, { packets: 1n, bytes: L + 4n }]],
    stats: { processed: 1n, stamped: 1n },
    extra: (t, [out]) => t.ok(checksumsValid(out!), 'checksums valid'),
  },
  {
    name: 'no vnf_ports entry for the ingress interface: XDP_PASS, no_route (still counted and stamped)',
    setup: { route: null },
    steps: [{ input: probe(1), verdict: XdpAction.PASS, output: probe(1, 1) }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n, no_route: 1n },
  },
  {
    name: 'vnf_ports names a slot without a vnf_tx entry: XDP_ABORTED',
    setup: { route: 3 },
    steps: [{ input: probe(1), verdict: XdpAction.ABORTED }],
    flows: [[F, { packets: 1n, bytes: L }]],
    stats: { processed: 1n, stamped: 1n },
  },
  {
    name: 'ARP: forwarded unchanged without per-flow state, non_ipv4',
    steps: [{ input: otherFrame(ETH_P_ARP, 28), verdict: R }],
    flows: [],
    stats: { non_ipv4: 1n },
  },
  {
    name: 'a frame that still carries a shim is not IPv4 to the VNF: forwarded untouched, non_ipv4',
    steps: [{ input: withShim(probe(1), 2, 42), verdict: R }],
    flows: [],
    stats: { non_ipv4: 1n },
  },
  {
    name: 'malformed IPv4 (ihl 3): forwarded uncounted, malformed',
    steps: [{ input: rawIpv4({ ihl: 3, protocol: IPPROTO_UDP, l4: probe(1).subarray(34) }), verdict: R }],
    flows: [],
    stats: { malformed: 1n },
  },
  {
    name: 'UDP header cut to 3 bytes: forwarded uncounted, malformed',
    steps: [{ input: rawIpv4({ protocol: IPPROTO_UDP, l4: Buffer.from([0x9c, 0x40, 0x23]) }), verdict: R }],
    flows: [],
    stats: { malformed: 1n },
  },
  {
    name: 'flow table full: a new flow is forwarded uncounted and unstamped (table_full), the known flow still counts',
    setup: { maxFlows: 1, flows: [[F, { packets: 7n, bytes: 0n }]] },
    steps: [
      { input: probe(1, 0, REV), verdict: R },
      { input: probe(8), verdict: R, output: probe(8, 8) },
    ],
    flows: [[F, { packets: 8n, bytes: L }]],
    stats: { table_full: 1n, processed: 1n, stamped: 1n },
  },
];

// ------------------------------------------------------------------ runner

const enc = (f: Flow): Buffer => sharpFlowKeyCodec.encode({ saddr: ipv4Number(f.src), daddr: ipv4Number(f.dst), sport: f.sport, dport: f.dport, proto: f.proto });
const STATS_ZERO = sharpVnfStatsCodec.decode(Buffer.alloc(sharpVnfStatsCodec.size));
const fmt = (f: FlowState): string => `${f[0].src}:${f[0].sport}>${f[0].dst}:${f[0].dport}/${f[0].proto} packets=${f[1].packets} bytes=${f[1].bytes}`;

function loadVnf(s: Setup): BpfCollection {
  const spec = BpfObjectSpec.open(programObject('vnf_counter'));
  if (s.maxFlows !== undefined) spec.setMaxEntries('flow_state', s.maxFlows);
  const coll = spec.load();
  try {
    if (s.route !== null) coll.map('vnf_ports').update(u32.encode(LO), u32.encode(s.route ?? 0));
    for (const slot of s.tx ?? [0]) coll.map('vnf_tx').update(u32.encode(slot), u32.encode(LO));
    for (const [k, v] of s.flows ?? []) coll.map('flow_state').update(enc(k), sharpVnfFlowStateCodec.encode(v), MapUpdate.NOEXIST);
  } catch (e) {
    coll.close();
    throw e;
  }
  return coll;
}

t.test('vnf_counter: verdicts, stamps, checksums, flow state and counters', async (t) => {
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const coll = loadVnf(c.setup ?? {});
      t.teardown(() => coll.close());
      const prog = coll.program('vnf_counter');
      const outs: Buffer[] = [];
      c.steps.forEach((s, i) => {
        const r = prog.run({ data: s.input, context: xdpMd({ dataLen: s.input.length, ingressIfindex: LO }) });
        t.equal(r.retval, s.verdict, `frame ${i + 1}: verdict`);
        if (s.verdict !== XdpAction.ABORTED) t.equal(r.dataOut!.toString('hex'), (s.output ?? s.input).toString('hex'), `frame ${i + 1}: output bytes`);
        outs.push(r.dataOut!);
      });
      const got: FlowState[] = [...coll.map('flow_state').entries()].map(([k, v]) => {
        const kk = sharpFlowKeyCodec.decode(k);
        const vv = sharpVnfFlowStateCodec.decode(v);
        t.same(kk.pad, Buffer.alloc(3), 'key padding is 0');
        const dotted = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
        return [{ src: dotted(kk.saddr), dst: dotted(kk.daddr), sport: kk.sport, dport: kk.dport, proto: kk.proto }, { packets: vv.packets, bytes: vv.bytes }];
      });
      t.same(got.map(fmt).sort(), c.flows.map(fmt).sort(), 'flow_state (exported through the generated codecs)');
      t.same(sumPerCpu(coll.map('vnf_stats').typed(u32, sharpVnfStatsCodec).getPerCpu(0)), counters(STATS_ZERO, c.stats), 'vnf_stats');
      c.extra?.(t, outs);
    });
  }
});
