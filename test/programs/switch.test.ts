// The XDP switch (ebpf/switch.bpf.c) as a table: each case sets up the maps
// of a freshly loaded switch, runs one crafted frame through
// BPF_PROG_TEST_RUN on a given ingress port, and checks the verdict, the
// output bytes and every counter the run may have touched (port_stats of
// all slots, rule_stats and ho_stats of every rule and handover id in play,
// per-CPU values summed). Ingress ports are idle interfaces in a test
// namespace; the run happens in that namespace so xdp_md.ingress_ifindex
// and the tx_ports devmap resolve there.
import t, { type Test } from 'tap';
import { BpfObjectSpec, RingBufferReader, XdpAction, u32, withNetns, xdpMd, MapUpdate, type BpfCollection } from '../../src/bpf/index.js';
import {
  sharpPortInfoCodec,
  sharpWildRuleCodec,
  sharpRuleActionCodec,
  sharpExactRuleCodec,
  sharpFlowKeyCodec,
  sharpRuleStatsCodec,
  sharpPortStatsCodec,
  sharpHoStatsCodec,
  sharpEthShimHdrCodec,
  sharpDivertRecordCodec,
  sharpDivertStatsCodec,
  SHARP_PORT_HOST,
  SHARP_PORT_VNF,
  SHARP_PHASE_NONE,
  SHARP_PHASE_PRE,
  SHARP_PHASE_POST,
  SHARP_PHASE_DIVERT,
  SHARP_PHASE_RELAY,
  SHARP_MAX_FRAME,
  SHARP_ETH_P_SHIM,
  SHARP_HID_MAX,
  SHARP_DEFAULT_MAX_IFINDEX,
  SHARP_DEFAULT_MAX_RULES,
  SHARP_MAX_WILD_RULES,
  type SharpPortStats,
  type SharpRuleStats,
  type SharpHoStats,
  type SharpDivertStats,
} from '../../src/generated/abi.js';
import { ipv4Number, IPPROTO_TCP, IPPROTO_UDP } from '../../src/net/frame.js';
import { programObject } from '../helpers/env.js';
import {
  FLOW,
  probeFrame,
  otherFrame,
  rawIpv4,
  withShim,
  sumPerCpu,
  counters,
  testPorts,
  ETH_P_ARP,
  ETH_P_IPV6,
  type TestPorts,
} from '../helpers/programs.js';

const IPPROTO_ICMP = 1;

// ------------------------------------------------------------------ frames

const udp = probeFrame({ seq: 1n });
const LEN = BigInt(udp.length);
const reverse = probeFrame({ seq: 1n }, { srcIp: FLOW.dstIp, dstIp: FLOW.srcIp, srcPort: FLOW.dstPort, dstPort: FLOW.srcPort });
/** TCP header with the flow's ports, 20 bytes */
const tcpHeader = (sport = FLOW.srcPort, dport = 80): Buffer => {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h[12] = 5 << 4;
  return h;
};
const tcp = rawIpv4({ protocol: IPPROTO_TCP, l4: Buffer.concat([tcpHeader(), Buffer.alloc(26)]) });
const icmp = rawIpv4({ protocol: IPPROTO_ICMP, l4: Buffer.from([8, 0, 0, 0, 0, 1, 0, 1, ...Buffer.alloc(24)]) });
/** L4 bytes of a later fragment: they look like ports 1111 -> 2222 but must not be read as such */
const laterFragment = rawIpv4({ protocol: IPPROTO_UDP, fragOff: 185, l4: Buffer.from([0x04, 0x57, 0x08, 0xae, ...Buffer.alloc(28, 1)]) });
/** first fragment: MF set, offset 0 — it carries the UDP header */
const firstFragment = rawIpv4({ protocol: IPPROTO_UDP, fragOff: 0x2000, l4: udp.subarray(34) });
const bigUdp = probeFrame({ seq: 1n, extra: SHARP_MAX_FRAME + 1 - 74 });
const withOptions = rawIpv4({ protocol: IPPROTO_UDP, options: Buffer.from([1, 1, 1, 1]), l4: udp.subarray(34) });

// ------------------------------------------------------------------ setup

interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}
const F: Flow = { src: FLOW.srcIp, dst: FLOW.dstIp, sport: FLOW.srcPort, dport: FLOW.dstPort, proto: IPPROTO_UDP };

interface Action {
  out: number;
  phase?: number;
  hid?: number;
}

interface Wild {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  proto?: number;
  /** ingress slot the rule is limited to */
  inSlot?: number;
  ruleId: number;
  priority?: number;
  valid?: number;
  /** raw rule address under the mask (default: the prefix's network) */
  rawSaddr?: string;
}

interface Setup {
  exact?: { flow: Flow; ruleId: number; action: Action }[];
  wild?: Wild[];
  /** wild_count[0] (default: wild.length) */
  wildCount?: number;
  actions?: Record<number, Action>;
  /** slots with a tx_ports entry (default all four) */
  txSlots?: number[];
  /** max_entries of `ports` = ifindex of this interface (it is then out of range) */
  portsEndAt?: string;
  /** relays: hid -> out slot (rollback relay routes) */
  relays?: Record<number, number>;
}

type PortCounts = Record<number, Partial<Record<keyof SharpPortStats, bigint>>>;

interface Case {
  name: string;
  setup: Setup;
  ingress: string;
  input: Buffer;
  /** runs of the same frame (counters are totals) */
  times?: number;
  verdict: number;
  /** expected output bytes; default for PASS/REDIRECT: the input unchanged */
  output?: Buffer;
  /** the output carries a shim with exactly these fields */
  shim?: { phase: number; hid: number };
  ports?: PortCounts;
  rules?: Record<number, { packets: bigint; bytes: bigint }>;
  ho?: Record<number, { pre: bigint; post: bigint }>;
  /** frames sent to the controller (default: none, divert_stats all 0) */
  divert?: { records: { hid: number; in_slot: number; data: Buffer }[]; stats: Partial<Record<keyof SharpDivertStats, bigint>> };
  extra?: (t: Test, coll: BpfCollection) => void;
}

// p0, p1 face hosts (slots 0, 1); p2, p3 face VNFs (slots 2, 3); px is no switch port
const PORTS = [
  { ifname: 'p0', role: SHARP_PORT_HOST },
  { ifname: 'p1', role: SHARP_PORT_HOST },
  { ifname: 'p2', role: SHARP_PORT_VNF },
  { ifname: 'p3', role: SHARP_PORT_VNF },
];
const SLOTS = [0, 1, 2, 3, 4, 5, 6, 7];

function prefix(p: string | undefined): { addr: number; mask: number } {
  if (p === undefined) return { addr: 0, mask: 0 };
  const [net, len] = p.split('/');
  const n = Number(len ?? 32);
  const mask = n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
  return { addr: (ipv4Number(net!) & mask) >>> 0, mask };
}

const actionBytes = (a: Action): Buffer => sharpRuleActionCodec.encode({ out_slot: a.out, hid: a.hid ?? 0, phase: a.phase ?? SHARP_PHASE_NONE, flags: 0 });
const flowKey = (f: Flow): Buffer => sharpFlowKeyCodec.encode({ saddr: ipv4Number(f.src), daddr: ipv4Number(f.dst), sport: f.sport, dport: f.dport, proto: f.proto });

function loadSwitch(ports: TestPorts, s: Setup): BpfCollection {
  const spec = BpfObjectSpec.open(programObject('switch'));
  const maxIf = Math.max(...Object.values(ports.ifindex)) + 1;
  spec.setMaxEntries('ports', s.portsEndAt !== undefined ? ports.ifindex[s.portsEndAt]! : Math.max(SHARP_DEFAULT_MAX_IFINDEX, maxIf));
  const coll = spec.load();
  try {
    PORTS.forEach((p, slot) => coll.map('ports').update(u32.encode(ports.ifindex[p.ifname]!), sharpPortInfoCodec.encode({ slot, role: p.role })));
    withNetns(ports.netns, () => {
      for (const slot of s.txSlots ?? [0, 1, 2, 3]) coll.map('tx_ports').update(u32.encode(slot), u32.encode(ports.ifindex[PORTS[slot]!.ifname]!));
    });
    for (const e of s.exact ?? []) coll.map('rules_exact').update(flowKey(e.flow), sharpExactRuleCodec.encode({ rule_id: e.ruleId, action: actionBytes(e.action) }), MapUpdate.NOEXIST);
    (s.wild ?? []).forEach((w, i) => {
      const sp = prefix(w.src);
      const dp = prefix(w.dst);
      coll.map('rules_wild').update(
        u32.encode(i),
        sharpWildRuleCodec.encode({
          saddr: w.rawSaddr !== undefined ? ipv4Number(w.rawSaddr) : sp.addr,
          smask: sp.mask,
          daddr: dp.addr,
          dmask: dp.mask,
          sport: w.sport ?? 0,
          dport: w.dport ?? 0,
          proto: w.proto ?? 0,
          in_slot_plus1: w.inSlot === undefined ? 0 : w.inSlot + 1,
          rule_id: w.ruleId,
          priority: w.priority ?? 1000 - i,
          valid: w.valid ?? 1,
        }),
      );
    });
    coll.map('wild_count').update(u32.encode(0), u32.encode(s.wildCount ?? (s.wild ?? []).length));
    for (const [id, a] of Object.entries(s.actions ?? {})) coll.map('rule_actions').update(u32.encode(Number(id)), actionBytes(a));
    for (const [hid, slot] of Object.entries(s.relays ?? {})) coll.map('relays').update(u32.encode(Number(hid)), u32.encode(slot));
  } catch (e) {
    coll.close();
    throw e;
  }
  return coll;
}

// ------------------------------------------------------------------ the table

const toV0: Action = { out: 2 };
const toV1: Action = { out: 3 };
/** one frame in on `inSlot`, redirected out of `outSlot` */
const fwd = (inSlot: number, outSlot: number, n = 1n, len = LEN, shim = 0n): PortCounts => ({
  [inSlot]: { rx_packets: n, rx_bytes: n * len },
  [outSlot]: { tx_packets: n, tx_bytes: n * (len + shim) },
});
const dropped = (inSlot: number, field: keyof SharpPortStats, len = LEN): PortCounts => ({ [inSlot]: { rx_packets: 1n, rx_bytes: len, [field]: 1n } });
/** a wildcard rule 20 -> p3 built from `w`, plus the same frame */
const wildCase = (name: string, w: Omit<Wild, 'ruleId'>, hit: boolean, input = udp, ingress = 'p0'): Case => {
  const inSlot = Number(ingress.slice(1));
  const len = BigInt(input.length);
  return hit
    ? { name, setup: { wild: [{ ...w, ruleId: 20 }], actions: { 20: toV1 } }, ingress, input, verdict: XdpAction.REDIRECT, ports: fwd(inSlot, 3, 1n, len), rules: { 20: { packets: 1n, bytes: len } } }
    : { name, setup: { wild: [{ ...w, ruleId: 20 }], actions: { 20: toV1 } }, ingress, input, verdict: XdpAction.DROP, ports: dropped(inSlot, 'drop_no_rule', len) };
};

/** a shim frame the relay path must not take: dropped as forged, drop_shim on its ingress port */
const relayForged = (name: string, setup: Setup, ingress: string, input: Buffer): Case => ({
  name: `${name}: dropped as forged, drop_shim`,
  setup,
  ingress,
  input,
  verdict: XdpAction.DROP,
  ports: dropped(Number(ingress.slice(1)), 'drop_shim', BigInt(input.length)),
});

const cases: Case[] = [
  // ---- exact rules
  {
    name: 'exact rule hit: redirected unchanged to its out slot, rule and ports counted',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2),
    rules: { 1: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'exact rule miss (other dport), no wildcard rules: dropped, drop_no_rule',
    setup: { exact: [{ flow: { ...F, dport: 9001 }, ruleId: 1, action: toV0 }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule'),
  },
  {
    name: 'exact keys are directional: the reverse flow misses',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }] },
    ingress: 'p2',
    input: reverse,
    verdict: XdpAction.DROP,
    ports: dropped(2, 'drop_no_rule'),
  },
  {
    name: 'exact rule of the reverse flow, arriving from a VNF port, out to a host port',
    setup: { exact: [{ flow: { src: F.dst, dst: F.src, sport: F.dport, dport: F.sport, proto: IPPROTO_UDP }, ruleId: 2, action: { out: 0 } }] },
    ingress: 'p2',
    input: reverse,
    verdict: XdpAction.REDIRECT,
    ports: fwd(2, 0),
    rules: { 2: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'exact rule on ICMP: the key has ports 0',
    setup: { exact: [{ flow: { ...F, sport: 0, dport: 0, proto: IPPROTO_ICMP }, ruleId: 3, action: toV0 }] },
    ingress: 'p0',
    input: icmp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2, 1n, BigInt(icmp.length)),
    rules: { 3: { packets: 1n, bytes: BigInt(icmp.length) } },
  },
  {
    name: 'TCP: the key has the TCP ports',
    setup: { exact: [{ flow: { ...F, dport: 80, proto: IPPROTO_TCP }, ruleId: 4, action: toV1 }] },
    ingress: 'p1',
    input: tcp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(1, 3, 1n, BigInt(tcp.length)),
    rules: { 4: { packets: 1n, bytes: BigInt(tcp.length) } },
  },
  {
    name: 'non-first fragment: ports are 0 in the key (its L4 bytes are not read as ports)',
    setup: { exact: [{ flow: { ...F, sport: 0, dport: 0 }, ruleId: 5, action: toV0 }] },
    ingress: 'p0',
    input: laterFragment,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2, 1n, BigInt(laterFragment.length)),
    rules: { 5: { packets: 1n, bytes: BigInt(laterFragment.length) } },
  },
  {
    name: 'first fragment (MF, offset 0) carries its ports: it misses a ports-0 rule',
    setup: { exact: [{ flow: { ...F, sport: 0, dport: 0 }, ruleId: 5, action: toV0 }] },
    ingress: 'p0',
    input: firstFragment,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule', BigInt(firstFragment.length)),
  },
  {
    name: 'IPv4 options (ihl 6): the ports are read after the options',
    setup: { exact: [{ flow: F, ruleId: 6, action: toV0 }] },
    ingress: 'p0',
    input: withOptions,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2, 1n, BigInt(withOptions.length)),
    rules: { 6: { packets: 1n, bytes: BigInt(withOptions.length) } },
  },
  {
    name: 'exact beats wildcard: an exact hit wins over a matching wildcard rule listed first',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }], wild: [{ ruleId: 10, priority: 0xffffffff }], actions: { 10: toV1 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2),
    rules: { 1: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'exact miss falls through to the wildcard list',
    setup: { exact: [{ flow: { ...F, sport: 1 }, ruleId: 1, action: toV0 }], wild: [{ ruleId: 10 }], actions: { 10: toV1 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 10: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'exact rule whose action is a later value update: the new action is used',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 1: { packets: 1n, bytes: LEN } },
    // set in `prepare` below: the action is replaced by toV1 before the run
  },
  {
    name: `rule id ${SHARP_DEFAULT_MAX_RULES + 904} (beyond rule_stats): forwarded, not counted`,
    setup: { exact: [{ flow: F, ruleId: SHARP_DEFAULT_MAX_RULES + 904, action: toV0 }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2),
    extra: (t, coll) => t.equal(coll.map('rule_stats').lookup(u32.encode(SHARP_DEFAULT_MAX_RULES + 904)), undefined, 'rule_stats has no such entry'),
  },
  {
    name: 'counting: three frames of one rule add up',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }] },
    ingress: 'p0',
    input: udp,
    times: 3,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2, 3n),
    rules: { 1: { packets: 3n, bytes: 3n * LEN } },
  },

  // ---- wildcard fields, one at a time: match and miss
  wildCase('wildcard src /24 matches', { src: '10.0.1.0/24' }, true),
  wildCase('wildcard src /24 misses', { src: '10.0.3.0/24' }, false),
  wildCase('wildcard src /32 matches exactly', { src: '10.0.1.1/32' }, true),
  wildCase('wildcard src /32 misses a neighbour address', { src: '10.0.1.2/32' }, false),
  wildCase('wildcard src: the mask applies to the rule address too (10.0.1.77 under /24)', { src: '10.0.1.0/24', rawSaddr: '10.0.1.77' }, true),
  wildCase('wildcard dst /16 matches', { dst: '10.0.0.0/16' }, true),
  wildCase('wildcard dst /16 misses', { dst: '10.1.0.0/16' }, false),
  wildCase('wildcard dst /0 matches anything', { dst: '192.168.0.0/0' }, true),
  wildCase('wildcard sport matches', { sport: FLOW.srcPort }, true),
  wildCase('wildcard sport misses', { sport: FLOW.srcPort + 1 }, false),
  wildCase('wildcard dport matches', { dport: FLOW.dstPort }, true),
  wildCase('wildcard dport misses', { dport: FLOW.dstPort + 1 }, false),
  wildCase('wildcard dport does not match a later fragment (its key has port 0)', { dport: FLOW.dstPort }, false, laterFragment),
  wildCase('wildcard proto UDP matches', { proto: IPPROTO_UDP }, true),
  wildCase('wildcard proto TCP misses a UDP frame', { proto: IPPROTO_TCP }, false),
  wildCase('wildcard proto 0 (any) matches TCP', {}, true, tcp),
  wildCase('wildcard proto 0 (any) matches ICMP', {}, true, icmp),
  wildCase('wildcard in_slot matches its ingress port (p1)', { inSlot: 1 }, true, udp, 'p1'),
  wildCase('wildcard in_slot misses another ingress port (p0)', { inSlot: 1 }, false, udp, 'p0'),
  wildCase('wildcard in_slot 0 (slot + 1 = 1) matches p0', { inSlot: 0 }, true, udp, 'p0'),
  wildCase('wildcard with every field set matches', { src: '10.0.1.0/24', dst: '10.0.2.1/32', sport: FLOW.srcPort, dport: FLOW.dstPort, proto: IPPROTO_UDP, inSlot: 0 }, true),
  wildCase('wildcard with every field set but one (dst) misses', { src: '10.0.1.0/24', dst: '10.0.2.2/32', sport: FLOW.srcPort, dport: FLOW.dstPort, proto: IPPROTO_UDP, inSlot: 0 }, false),

  // ---- wildcard list order
  {
    name: 'two matching wildcard rules: the first in the array wins',
    setup: { wild: [{ ruleId: 20 }, { ruleId: 21 }], actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 20: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'array order decides, not the priority field (entry 1 has the higher priority, entry 0 still wins)',
    setup: { wild: [{ ruleId: 21, priority: 1 }, { ruleId: 20, priority: 1000 }], actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2),
    rules: { 21: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'a non-matching first entry is passed over for the next match',
    setup: { wild: [{ ruleId: 21, dport: 1234 }, { ruleId: 20, src: '10.0.0.0/8' }], actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 20: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'valid = 0 entries are skipped: the matching disabled entry 0 loses to entry 1',
    setup: { wild: [{ ruleId: 21, valid: 0 }, { ruleId: 20 }], actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 20: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'only disabled entries: dropped as no rule',
    setup: { wild: [{ ruleId: 21, valid: 0 }, { ruleId: 20, valid: 0 }], actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule'),
  },
  {
    name: 'wild_count bounds the scan: a matching entry past it is not seen',
    setup: { wild: [{ ruleId: 21, dport: 1234 }, { ruleId: 20 }], wildCount: 1, actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule'),
  },
  {
    name: 'wild_count 0: no wildcard rule at all',
    setup: { wild: [{ ruleId: 20 }], wildCount: 0, actions: { 20: toV1 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule'),
  },
  {
    name: `wild_count above ${SHARP_MAX_WILD_RULES} is clamped: the scan still works`,
    setup: { wild: [{ ruleId: 21, dport: 1234 }, { ruleId: 20 }], wildCount: 100000, actions: { 20: toV1, 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 20: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'wildcard match without an entry in rule_actions: dropped as no rule',
    setup: { wild: [{ ruleId: 20 }], actions: { 21: toV0 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_no_rule'),
  },
  {
    name: 'the last possible entry (index 255) is scanned',
    setup: { wild: [...Array.from({ length: SHARP_MAX_WILD_RULES - 1 }, (_, i) => ({ ruleId: 100 + i, dport: 1 })), { ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3),
    rules: { 20: { packets: 1n, bytes: LEN } },
  },

  // ---- marking
  {
    name: 'PRE marking (exact rule): shim 0x821C, tag 1<<14|7, inner EtherType 0x0800, MACs kept, +4 bytes; pre counted',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_PRE, hid: 7 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    output: Buffer.concat([udp.subarray(0, 12), Buffer.from([0x82, 0x1c, 0x40, 0x07, 0x08, 0x00]), udp.subarray(14)]),
    shim: { phase: SHARP_PHASE_PRE, hid: 7 },
    ports: fwd(0, 2, 1n, LEN, 4n),
    rules: { 1: { packets: 1n, bytes: LEN } },
    ho: { 7: { pre: 1n, post: 0n } },
  },
  {
    name: `POST marking (wildcard rule), hid ${SHARP_HID_MAX}: tag 0xBFFF; post counted`,
    setup: { wild: [{ ruleId: 20 }], actions: { 20: { out: 3, phase: SHARP_PHASE_POST, hid: SHARP_HID_MAX } } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    output: Buffer.concat([udp.subarray(0, 12), Buffer.from([0x82, 0x1c, 0xbf, 0xff, 0x08, 0x00]), udp.subarray(14)]),
    shim: { phase: SHARP_PHASE_POST, hid: SHARP_HID_MAX },
    ports: fwd(0, 3, 1n, LEN, 4n),
    rules: { 20: { packets: 1n, bytes: LEN } },
    ho: { [SHARP_HID_MAX]: { pre: 0n, post: 1n } },
  },
  {
    name: 'POST marking, hid 1 (the smallest): tag 0x8001',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 3, phase: SHARP_PHASE_POST, hid: 1 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    output: Buffer.concat([udp.subarray(0, 12), Buffer.from([0x82, 0x1c, 0x80, 0x01, 0x08, 0x00]), udp.subarray(14)]),
    shim: { phase: SHARP_PHASE_POST, hid: 1 },
    ports: fwd(0, 3, 1n, LEN, 4n),
    rules: { 1: { packets: 1n, bytes: LEN } },
    ho: { 1: { pre: 0n, post: 1n } },
  },
  {
    name: 'PRE marking of a TCP frame from a VNF port: shim inserted the same way',
    setup: { wild: [{ ruleId: 20, proto: IPPROTO_TCP }], actions: { 20: { out: 1, phase: SHARP_PHASE_PRE, hid: 300 } } },
    ingress: 'p3',
    input: tcp,
    verdict: XdpAction.REDIRECT,
    output: withShim(tcp, SHARP_PHASE_PRE, 300),
    shim: { phase: SHARP_PHASE_PRE, hid: 300 },
    ports: fwd(3, 1, 1n, BigInt(tcp.length), 4n),
    rules: { 20: { packets: 1n, bytes: BigInt(tcp.length) } },
    ho: { 300: { pre: 1n, post: 0n } },
  },
  {
    name: 'PRE marking counts every frame: 3 runs, pre 3',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_PRE, hid: 9 } }] },
    ingress: 'p0',
    input: udp,
    times: 3,
    verdict: XdpAction.REDIRECT,
    output: withShim(udp, SHARP_PHASE_PRE, 9),
    shim: { phase: SHARP_PHASE_PRE, hid: 9 },
    ports: fwd(0, 2, 3n, LEN, 4n),
    rules: { 1: { packets: 3n, bytes: 3n * LEN } },
    ho: { 9: { pre: 3n, post: 0n } },
  },
  {
    name: 'phase NONE with a hid set: no shim, nothing counted for that hid',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_NONE, hid: 9 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 2),
    rules: { 1: { packets: 1n, bytes: LEN } },
    ho: { 9: { pre: 0n, post: 0n } },
  },
  {
    name: 'bad action: phase 7 (no such phase) -> dropped, drop_bad_action, no shim counted',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: 7, hid: 9 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_bad_action'),
    ho: { 9: { pre: 0n, post: 0n } },
  },
  {
    name: 'bad action: PRE with hid 0 -> dropped, drop_bad_action',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: { out: 2, phase: SHARP_PHASE_PRE, hid: 0 } } },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_bad_action'),
    ho: { 0: { pre: 0n, post: 0n } },
  },
  {
    name: `bad action: POST with hid ${SHARP_HID_MAX + 1} -> dropped, drop_bad_action`,
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_POST, hid: SHARP_HID_MAX + 1 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_bad_action'),
    // the tag would have wrapped to hid 0
    ho: { 0: { pre: 0n, post: 0n } },
  },

  // ---- controller-buffer baseline
  {
    name: 'DIVERT (exact rule): the whole frame goes to the controller ring buffer with hid and ingress slot, and is dropped',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_DIVERT, hid: 12 } }] },
    ingress: 'p1',
    input: udp,
    verdict: XdpAction.DROP,
    ports: { 1: { rx_packets: 1n, rx_bytes: LEN } },
    ho: { 12: { pre: 0n, post: 0n } },
    divert: { records: [{ hid: 12, in_slot: 1, data: udp }], stats: { packets: 1n, bytes: LEN } },
  },
  {
    name: 'DIVERT (wildcard rule), two frames: two records in arrival order',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: { out: 3, phase: SHARP_PHASE_DIVERT, hid: 13 } } },
    ingress: 'p0',
    input: tcp,
    times: 2,
    verdict: XdpAction.DROP,
    ports: { 0: { rx_packets: 2n, rx_bytes: 2n * BigInt(tcp.length) } },
    divert: {
      records: [
        { hid: 13, in_slot: 0, data: tcp },
        { hid: 13, in_slot: 0, data: tcp },
      ],
      stats: { packets: 2n, bytes: 2n * BigInt(tcp.length) },
    },
  },
  {
    name: `DIVERT of a frame longer than SHARP_MAX_FRAME: dropped, counted in divert_stats.dropped, no record`,
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 2, phase: SHARP_PHASE_DIVERT, hid: 12 } }] },
    ingress: 'p0',
    input: bigUdp,
    verdict: XdpAction.DROP,
    ports: { 0: { rx_packets: 1n, rx_bytes: BigInt(bigUdp.length) } },
    divert: { records: [], stats: { dropped: 1n } },
  },

  // ---- egress port missing
  {
    name: 'out slot without a tx_ports entry: XDP_ABORTED, drop_no_tx, nothing sent or counted for the rule',
    setup: { exact: [{ flow: F, ruleId: 1, action: { out: 5 } }] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.ABORTED,
    ports: dropped(0, 'drop_no_tx'),
  },
  {
    name: 'out slot of a port whose tx_ports entry was removed: XDP_ABORTED, drop_no_tx',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV1 }], txSlots: [0, 1, 2] },
    ingress: 'p0',
    input: udp,
    verdict: XdpAction.ABORTED,
    ports: dropped(0, 'drop_no_tx'),
  },

  // ---- what the switch does not forward
  {
    name: 'forged shim frame on a host port: dropped even though a catch-all rule exists, drop_shim',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: withShim(udp, SHARP_PHASE_POST, 5),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_shim', LEN + 4n),
  },
  {
    name: 'forged PRE shim frame on a VNF port: dropped as well, drop_shim',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV0 } },
    ingress: 'p3',
    input: withShim(udp, SHARP_PHASE_PRE, 7),
    verdict: XdpAction.DROP,
    ports: dropped(3, 'drop_shim', LEN + 4n),
    ho: { 7: { pre: 0n, post: 0n } },
  },

  // ---- rollback relay: shim(RELAY, hid) from a VNF port, by the relays route
  {
    name: 'RELAY shim from a VNF port with a route: stripped, redirected to the route slot, relayed + tx counted, no rule consulted',
    // the catch-all rule would send the frame elsewhere (p3): the route wins
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 }, relays: { 7: 2 } },
    ingress: 'p3',
    input: withShim(udp, SHARP_PHASE_RELAY, 7),
    verdict: XdpAction.REDIRECT,
    output: udp,
    ports: { 3: { rx_packets: 1n, rx_bytes: LEN + 4n, relayed: 1n }, 2: { tx_packets: 1n, tx_bytes: LEN } },
    ho: { 7: { pre: 0n, post: 0n } },
  },
  {
    name: 'RELAY shim, three frames in a row: each stripped and relayed in turn',
    setup: { relays: { [SHARP_HID_MAX]: 2 } },
    ingress: 'p3',
    input: withShim(tcp, SHARP_PHASE_RELAY, SHARP_HID_MAX),
    times: 3,
    verdict: XdpAction.REDIRECT,
    output: tcp,
    ports: { 3: { rx_packets: 3n, rx_bytes: 3n * BigInt(tcp.length + 4), relayed: 3n }, 2: { tx_packets: 3n, tx_bytes: 3n * BigInt(tcp.length) } },
  },
  relayForged('RELAY shim from a VNF port without a route for its hid (a catch-all rule exists)', { relays: { 8: 2 }, wild: [{ ruleId: 20 }], actions: { 20: toV0 } }, 'p3', withShim(udp, SHARP_PHASE_RELAY, 7)),
  relayForged('RELAY shim from a host port, even with a route', { relays: { 7: 2 } }, 'p0', withShim(udp, SHARP_PHASE_RELAY, 7)),
  relayForged('POST shim from a VNF port whose hid has a relay route (only RELAY is relayed)', { relays: { 7: 2 } }, 'p3', withShim(udp, SHARP_PHASE_POST, 7)),
  relayForged('RELAY shim with hid 0 (a route for 0 exists)', { relays: { 0: 2 } }, 'p3', withShim(udp, SHARP_PHASE_RELAY, 0)),
  relayForged('RELAY shim cut short (16 bytes: tag, but no inner EtherType)', { relays: { 7: 2 } }, 'p3', withShim(udp, SHARP_PHASE_RELAY, 7).subarray(0, 16)),
  {
    name: 'RELAY route to a slot without a tx_ports entry: XDP_ABORTED, drop_no_tx, not counted as relayed',
    setup: { relays: { 7: 5 } },
    ingress: 'p3',
    input: withShim(udp, SHARP_PHASE_RELAY, 7),
    verdict: XdpAction.ABORTED,
    ports: dropped(3, 'drop_no_tx', LEN + 4n),
  },
  {
    name: 'ARP passes to the stack unchanged, pass_non_ip',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: otherFrame(ETH_P_ARP, 28),
    verdict: XdpAction.PASS,
    ports: { 0: { rx_packets: 1n, rx_bytes: 42n, pass_non_ip: 1n } },
  },
  {
    name: 'IPv6 passes to the stack unchanged, pass_non_ip',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p2',
    input: otherFrame(ETH_P_IPV6, 60),
    verdict: XdpAction.PASS,
    ports: { 2: { rx_packets: 1n, rx_bytes: 74n, pass_non_ip: 1n } },
  },
  {
    name: 'unknown ingress port (lo: ports entry with role 0): passes unchanged, nothing counted',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }], wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'lo',
    input: udp,
    verdict: XdpAction.PASS,
  },
  {
    name: 'unknown ingress port (ifindex beyond the ports array): passes unchanged, nothing counted',
    setup: { exact: [{ flow: F, ruleId: 1, action: toV0 }], portsEndAt: 'px' },
    ingress: 'px',
    input: udp,
    verdict: XdpAction.PASS,
  },
  {
    name: 'unknown ingress port: a shim frame passes too (no port, no policy)',
    setup: {},
    ingress: 'lo',
    input: withShim(udp, SHARP_PHASE_PRE, 7),
    verdict: XdpAction.PASS,
  },

  // ---- malformed IPv4
  {
    name: 'IPv4 EtherType with no IP header: drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: udp.subarray(0, 14),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed', 14n),
  },
  {
    name: 'IPv4 header cut short (19 bytes): drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: udp.subarray(0, 33),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed', 33n),
  },
  {
    name: 'IP version 6 under EtherType IPv4: drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ version: 6, protocol: IPPROTO_UDP, l4: udp.subarray(34) }),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed'),
  },
  {
    name: 'ihl 4: drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ ihl: 4, protocol: IPPROTO_UDP, l4: udp.subarray(34) }),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed'),
  },
  {
    name: 'ihl 15 with a 20-byte header and 2 bytes after it: drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ ihl: 15, protocol: IPPROTO_UDP, l4: Buffer.alloc(2) }),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed', 36n),
  },
  {
    name: 'UDP with only 2 bytes of header (no room for both ports): drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ protocol: IPPROTO_UDP, l4: Buffer.from([0x9c, 0x40]) }),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed', 36n),
  },
  {
    name: 'TCP with 3 bytes of header: drop_malformed',
    setup: { wild: [{ ruleId: 20 }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ protocol: IPPROTO_TCP, l4: Buffer.from([0x9c, 0x40, 0]) }),
    verdict: XdpAction.DROP,
    ports: dropped(0, 'drop_malformed', 37n),
  },
  {
    name: 'ICMP with an empty payload is not malformed (no ports needed): forwarded',
    setup: { wild: [{ ruleId: 20, proto: IPPROTO_ICMP }], actions: { 20: toV1 } },
    ingress: 'p0',
    input: rawIpv4({ protocol: IPPROTO_ICMP, l4: Buffer.alloc(0) }),
    verdict: XdpAction.REDIRECT,
    ports: fwd(0, 3, 1n, 34n),
    rules: { 20: { packets: 1n, bytes: 34n } },
  },
];

/** per-case preparation beyond the declarative setup */
const prepare: Record<string, (coll: BpfCollection) => void> = {
  'exact rule whose action is a later value update: the new action is used': (coll) =>
    coll.map('rules_exact').update(flowKey(F), sharpExactRuleCodec.encode({ rule_id: 1, action: actionBytes(toV1) }), MapUpdate.EXIST),
};

// ------------------------------------------------------------------ runner

function ruleIds(c: Case): number[] {
  const ids = new Set<number>();
  for (const e of c.setup.exact ?? []) ids.add(e.ruleId);
  for (const w of c.setup.wild ?? []) ids.add(w.ruleId);
  for (const id of Object.keys(c.setup.actions ?? {})) ids.add(Number(id));
  for (const id of Object.keys(c.rules ?? {})) ids.add(Number(id));
  return [...ids].filter((id) => id < SHARP_DEFAULT_MAX_RULES);
}

function hids(c: Case): number[] {
  const ids = new Set<number>();
  for (const a of [...(c.setup.exact ?? []).map((e) => e.action), ...Object.values(c.setup.actions ?? {})]) if (a.hid !== undefined && a.hid <= SHARP_HID_MAX) ids.add(a.hid);
  for (const id of Object.keys(c.ho ?? {})) ids.add(Number(id));
  return [...ids];
}

const PORT_ZERO = sharpPortStatsCodec.decode(Buffer.alloc(sharpPortStatsCodec.size));
const DIVERT_ZERO = sharpDivertStatsCodec.decode(Buffer.alloc(sharpDivertStatsCodec.size));

t.test('switch: verdicts, output frames and counters, one case per branch', async (t) => {
  const ports = testPorts(t, 'sw', ['p0', 'p1', 'p2', 'p3', 'px']);
  t.ok(Math.max(...Object.values(ports.ifindex)) < SHARP_DEFAULT_MAX_IFINDEX, 'test ifindexes fit the default ports array');

  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const coll = loadSwitch(ports, c.setup);
      t.teardown(() => coll.close());
      prepare[c.name]?.(coll);
      const prog = coll.program('sharp_switch');
      const reader = new RingBufferReader(coll.map('divert'));
      t.teardown(() => reader.close());
      const diverted: Buffer[] = [];
      reader.on('data', (b: Buffer) => diverted.push(Buffer.from(b)));
      const ctx = xdpMd({ dataLen: c.input.length, ingressIfindex: ports.ifindex[c.ingress]! });
      for (let i = 0; i < (c.times ?? 1); i++) {
        const r = prog.run({ data: c.input, context: ctx, netns: ports.netns });
        t.equal(r.retval, c.verdict, `verdict (run ${i + 1})`);
        const expected = c.output ?? (c.verdict === XdpAction.PASS || c.verdict === XdpAction.REDIRECT ? c.input : undefined);
        if (expected !== undefined) t.same(r.dataOut!.toString('hex'), expected.toString('hex'), 'output bytes');
        if (c.shim !== undefined) {
          const out = r.dataOut!;
          const h = sharpEthShimHdrCodec.decode(out);
          t.equal(out.length, c.input.length + 4, 'output is 4 bytes longer');
          t.same(h.dst, c.input.subarray(0, 6), 'destination MAC kept');
          t.same(h.src, c.input.subarray(6, 12), 'source MAC kept');
          t.equal(h.proto, SHARP_ETH_P_SHIM, 'EtherType 0x821C');
          t.equal(h.tag >> 14, c.shim.phase, 'tag phase');
          t.equal(h.tag & 0x3fff, c.shim.hid, 'tag hid');
          t.equal(h.inner_proto, c.input.readUInt16BE(12), 'inner EtherType is the original one');
          t.same(out.subarray(18), c.input.subarray(14), 'payload unchanged');
        }
      }

      const ps = coll.map('port_stats').typed(u32, sharpPortStatsCodec);
      for (const slot of SLOTS) t.same(sumPerCpu(ps.getPerCpu(slot)), counters(PORT_ZERO, c.ports?.[slot] ?? {}), `port_stats[${slot}]`);
      const rs = coll.map('rule_stats').typed(u32, sharpRuleStatsCodec);
      for (const id of ruleIds(c)) t.same(sumPerCpu<SharpRuleStats>(rs.getPerCpu(id)), c.rules?.[id] ?? { packets: 0n, bytes: 0n }, `rule_stats[${id}]`);
      const hs = coll.map('ho_stats').typed(u32, sharpHoStatsCodec);
      for (const hid of hids(c)) {
        const v = sumPerCpu<SharpHoStats>(hs.getPerCpu(hid));
        t.same({ pre: v.pre_packets, post: v.post_packets }, c.ho?.[hid] ?? { pre: 0n, post: 0n }, `ho_stats[${hid}]`);
      }
      reader.consume();
      t.same(
        diverted.map((b) => {
          const r = sharpDivertRecordCodec.decode(b);
          return { hid: r.hid, in_slot: r.in_slot, len: r.len, data: r.data.subarray(0, r.len).toString('hex') };
        }),
        (c.divert?.records ?? []).map((r) => ({ hid: r.hid, in_slot: r.in_slot, len: r.data.length, data: r.data.toString('hex') })),
        'records in the divert ring buffer',
      );
      t.same(sumPerCpu(coll.map('divert_stats').typed(u32, sharpDivertStatsCodec).getPerCpu(0)), counters(DIVERT_ZERO, c.divert?.stats ?? {}), 'divert_stats');
      c.extra?.(t, coll);
    });
  }
});

t.test('switch: a PRE-marked frame whose out slot has no tx_ports entry', async (t) => {
  // The frame is marked (pre_packets counted) before bpf_redirect_map fails;
  // the frame never leaves, so the old instance can never see it.
  const ports = testPorts(t, 'swx', ['p0', 'p1', 'p2', 'p3']);
  const coll = loadSwitch(ports, { exact: [{ flow: F, ruleId: 1, action: { out: 5, phase: SHARP_PHASE_PRE, hid: 11 } }] });
  t.teardown(() => coll.close());
  const r = coll.program('sharp_switch').run({ data: udp, context: xdpMd({ dataLen: udp.length, ingressIfindex: ports.ifindex['p0']! }), netns: ports.netns });
  t.equal(r.retval, XdpAction.ABORTED, 'XDP_ABORTED');
  t.same(sumPerCpu(coll.map('port_stats').typed(u32, sharpPortStatsCodec).getPerCpu(0)), counters(PORT_ZERO, { rx_packets: 1n, rx_bytes: LEN, drop_no_tx: 1n }), 'counted as drop_no_tx');
  const ho = sumPerCpu<SharpHoStats>(coll.map('ho_stats').typed(u32, sharpHoStatsCodec).getPerCpu(11));
  t.equal(ho.pre_packets, 0n, 'a frame that was not sent is not part of pre_sent');
});

