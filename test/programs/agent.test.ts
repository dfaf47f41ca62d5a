// The agent (ebpf/agent.bpf.c) as a table. Each case loads a fresh agent
// (ring_capacity 4, ring_count 2: slots and release_ctl sized to match), sets
// up its maps, runs a sequence of frames through agent / agent_replay /
// agent_release_finish (BPF_PROG_TEST_RUN, ingress interface from xdp_md,
// run inside the test namespace that owns it) and checks every verdict and
// output frame, then the whole handover element, the ring slots and the
// agent's counters (per-CPU values summed). The last tests replay a ring
// with live frames through the chained VNF and out of a veth, and in RELAY
// mode back out of the interface the frames came in on (XDP_TX), observed on
// the peer.
import t, { type Test } from 'tap';
import { BpfObjectSpec, XdpAction, u32, withNetns, xdpMd, MapUpdate, ifindexOf, type BpfCollection } from '../../src/bpf/index.js';
import {
  sharpAgentHoCodec,
  sharpAgentIfaceCodec,
  sharpAgentStatsCodec,
  sharpReleaseCtlCodec,
  sharpSlotCodec,
  sharpFlowKeyCodec,
  sharpVnfFlowStateCodec,
  sharpProbeCodec,
  rodataLayouts,
  SHARP_AGENT_OLD,
  SHARP_AGENT_NEW,
  SHARP_HOLD_HOLDING,
  SHARP_HOLD_PASSING,
  SHARP_PHASE_PRE,
  SHARP_PHASE_POST,
  SHARP_PHASE_NONE,
  SHARP_FINISH_AGAIN,
  SHARP_FINISH_DONE,
  SHARP_FINISH_ERROR,
  SHARP_MAX_FRAME,
  SHARP_REPLAY_RELAY,
  SHARP_REPLAY_RELAY_DIRECT,
  SHARP_PHASE_RELAY,
  SHARP_HID_MAX,
  SHARP_VNF_CHAIN_INDEX,
  type SharpAgentHo,
  type SharpAgentStats,
  type SharpVnfFlowState,
} from '../../src/generated/abi.js';
import { checksumsValid, ipv4Number, IPPROTO_UDP } from '../../src/net/frame.js';
import { programObject, testObject } from '../helpers/env.js';
import { testVethPair } from '../helpers/netns.js';
import { FLOW, probeFrame, withShim, sumPerCpu, counters, testPorts, sinkRecords, sinkCount, sleep, type TestPorts } from '../helpers/programs.js';

const CAP = 4;
const RINGS = 2;
const HID = 42;
const HOLDING = SHARP_HOLD_HOLDING;
const PASSING = SHARP_HOLD_PASSING;

// probes p[1..]: seq i, distinct lengths so a frame in the wrong slot shows
const p = (i: number): Buffer => probeFrame({ seq: BigInt(i), flow: 3, extra: i });
const post = (f: Buffer, hid = HID): Buffer => withShim(f, SHARP_PHASE_POST, hid);
const pre = (f: Buffer, hid = HID): Buffer => withShim(f, SHARP_PHASE_PRE, hid);
const relayed = (f: Buffer, hid = HID): Buffer => withShim(f, SHARP_PHASE_RELAY, hid);
/** p(i) as the chained VNF emits it: stamp = its per-flow counter, UDP checksum recomputed from scratch */
const stamped = (i: number, stamp: number): Buffer => probeFrame({ seq: BigInt(i), flow: 3, extra: i, stamp: BigInt(stamp) });
const TEMPLATE = Buffer.alloc(64);

type Prog = 'agent' | 'agent_replay' | 'agent_release_finish';
interface Step {
  prog?: Prog;
  ingress: string;
  input?: Buffer;
  verdict: number;
  /** expected output bytes (checked for verdicts other than DROP/ABORTED unless null) */
  output?: Buffer | null;
}

/** fields of a handover element (the spin lock left out) */
type Ho = Partial<Omit<SharpAgentHo, 'lock'>>;

interface Setup {
  handovers?: Record<number, Ho>;
  /** load vnf_counter into vnf_chain[0]; it forwards if0 <-> if1 */
  chain?: boolean;
  releaseCtl?: Record<number, { requested: number; flushed_head: number }>;
  /** replay_ctl[side] = hid (default: HID on both sides) */
  replayCtl?: [number, number];
  replayMode?: Record<number, number>;
  relayTx?: Record<number, string>;
  slots?: Record<number, { len: number; ready: number; data?: Buffer }>;
  /** load-time overrides */
  load?: { ringCapacity?: number; ringCount?: number; slots?: number };
}

interface Case {
  name: string;
  setup: Setup;
  steps: Step[];
  /** expected handover elements: the setup value, changed by these fields */
  ho?: Record<number, Ho>;
  stats?: Partial<Record<keyof SharpAgentStats, bigint>>;
  /** expected ring slots (data compared over len bytes) */
  slots?: Record<number, { len: number; ready: number; data?: Buffer }>;
  extra?: (t: Test, env: Env) => void;
}

interface Env {
  agent: BpfCollection;
  vnf: BpfCollection | undefined;
  ports: TestPorts;
}

const OLD = (o: Ho = {}): Ho => ({ role: SHARP_AGENT_OLD, ring: 0, state: [PASSING, PASSING], ...o });
const NEW = (o: Ho = {}): Ho => ({ role: SHARP_AGENT_NEW, ring: 0, state: [HOLDING, HOLDING], ...o });
/** a slot holding frame f, published */
const full = (f: Buffer): { len: number; ready: number; data: Buffer } => ({ len: f.length, ready: 1, data: f });
/** a slot whose frame was replayed (ready cleared, bytes still there) */
const done = (f: Buffer): { len: number; ready: number; data: Buffer } => ({ len: f.length, ready: 0, data: f });
const hold = (i: number, ingress = 'if0'): Step => ({ ingress, input: post(p(i)), verdict: XdpAction.DROP });
const replay = (ingress: string, verdict: number, output?: Buffer | null): Step => ({ prog: 'agent_replay', ingress, verdict, output: output ?? null });
const finish = (ingress: string, verdict: number): Step => ({ prog: 'agent_release_finish', ingress, verdict, output: null });

const HO_ZERO: Omit<SharpAgentHo, 'lock'> = {
  role: 0,
  ring: 0,
  state: [0, 0],
  head: [0, 0],
  tail: [0, 0],
  replaying: [0, 0],
  pad0: 0,
  pre_seen: 0n,
  post_seen: 0n,
  held: [0n, 0n],
  released: [0n, 0n],
  overflow: [0n, 0n],
  passed: [0n, 0n],
  replay_failed: [0n, 0n],
};
const STATS_ZERO = sharpAgentStatsCodec.decode(Buffer.alloc(sharpAgentStatsCodec.size));

const big = (n: number): Buffer => probeFrame({ seq: 77n, extra: n - 74 });

const cases: Case[] = [
  // ---- arrival path: what is not a handover frame
  {
    name: 'unknown interface (lo): passes untouched (shim kept), nothing counted',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'lo', input: pre(p(1)), verdict: XdpAction.PASS, output: pre(p(1)) }],
  },
  {
    name: 'interface with side 2: config_error, passes untouched',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'ifbad', input: pre(p(1)), verdict: XdpAction.PASS, output: pre(p(1)) }],
    stats: { config_error: 1n },
  },
  {
    name: 'plain frame, no VNF chained: passed_plain, chain_missing, XDP_PASS unchanged',
    setup: {},
    steps: [{ ingress: 'if0', input: p(1), verdict: XdpAction.PASS, output: p(1) }],
    stats: { passed_plain: 1n, chain_missing: 1n },
  },
  {
    name: 'plain frame with the VNF chained: tail call into vnf_counter, stamped 1 and redirected',
    setup: { chain: true },
    steps: [{ ingress: 'if0', input: p(1), verdict: XdpAction.REDIRECT, output: stamped(1, 1) }],
    stats: { passed_plain: 1n },
    extra: (t, env) => t.same(vnfFlow(env), { packets: 1n, bytes: BigInt(p(1).length) }, 'the VNF counted the flow'),
  },
  {
    name: 'plain frame on an interface with accept_shim 0 passes (the flag is about shims only)',
    setup: {},
    steps: [{ ingress: 'ifr', input: p(1), verdict: XdpAction.PASS, output: p(1) }],
    stats: { passed_plain: 1n, chain_missing: 1n },
  },
  {
    name: 'ARP frame (not IPv4, no shim) goes to the VNF like any plain frame',
    setup: {},
    steps: [{ ingress: 'if1', input: Buffer.concat([p(1).subarray(0, 12), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]), verdict: XdpAction.PASS, output: null }],
    stats: { passed_plain: 1n, chain_missing: 1n },
  },

  // ---- shims: strip, count, reject
  {
    name: 'PRE shim, role OLD (side 0): stripped, output = the original frame, pre_seen and passed[0] counted',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if0', input: pre(p(1)), verdict: XdpAction.PASS, output: p(1) }],
    ho: { [HID]: { pre_seen: 1n, passed: [1n, 0n] } },
    stats: { stripped: 1n, chain_missing: 1n },
  },
  {
    name: 'POST shim, role OLD (side 1): stripped, post_seen and passed[1]',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if1', input: post(p(2)), verdict: XdpAction.PASS, output: p(2) }],
    ho: { [HID]: { post_seen: 1n, passed: [0n, 1n] } },
    stats: { stripped: 1n, chain_missing: 1n },
  },
  {
    name: 'three PRE frames at OLD: pre_seen 3, in order, each stripped',
    setup: { handovers: { [HID]: OLD() } },
    steps: [1, 2, 3].map((i) => ({ ingress: 'if0', input: pre(p(i)), verdict: XdpAction.PASS, output: p(i) })),
    ho: { [HID]: { pre_seen: 3n, passed: [3n, 0n] } },
    stats: { stripped: 3n, chain_missing: 3n },
  },
  {
    name: 'PRE shim at OLD with the VNF chained: the VNF sees the stripped frame (stamped, redirected)',
    setup: { handovers: { [HID]: OLD() }, chain: true },
    steps: [
      { ingress: 'if0', input: pre(p(1)), verdict: XdpAction.REDIRECT, output: stamped(1, 1) },
      { ingress: 'if0', input: pre(p(2)), verdict: XdpAction.REDIRECT, output: stamped(2, 2) },
    ],
    ho: { [HID]: { pre_seen: 2n, passed: [2n, 0n] } },
    stats: { stripped: 2n },
  },
  {
    name: 'shim on an interface with accept_shim 0: dropped, shim_rejected, not counted in pre_seen',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'ifr', input: pre(p(1)), verdict: XdpAction.DROP }],
    stats: { shim_rejected: 1n },
  },
  {
    name: 'unknown hid: stripped and passed, unknown_hid',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if0', input: post(p(1), 43), verdict: XdpAction.PASS, output: p(1) }],
    stats: { stripped: 1n, unknown_hid: 1n, chain_missing: 1n },
  },
  {
    name: 'unknown hid with the VNF chained: the stripped frame reaches the VNF',
    setup: { chain: true },
    steps: [{ ingress: 'if0', input: pre(p(1), 9000), verdict: XdpAction.REDIRECT, output: stamped(1, 1) }],
    stats: { stripped: 1n, unknown_hid: 1n },
  },
  {
    name: 'hid 0 in the tag: dropped, shim_malformed',
    setup: { handovers: { 0: OLD() } },
    steps: [{ ingress: 'if0', input: withShim(p(1), SHARP_PHASE_PRE, 0), verdict: XdpAction.DROP }],
    stats: { shim_malformed: 1n },
  },
  {
    name: 'phase NONE in the tag: dropped, shim_malformed',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if0', input: withShim(p(1), SHARP_PHASE_NONE, HID), verdict: XdpAction.DROP }],
    stats: { shim_malformed: 1n },
  },
  {
    name: 'phase 3 (RELAY) in the tag: an agent never takes a relayed frame, dropped, shim_malformed',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if0', input: withShim(p(1), 3, HID), verdict: XdpAction.DROP }],
    stats: { shim_malformed: 1n },
  },
  {
    name: 'truncated shim (frame ends 2 bytes into it): dropped, shim_malformed',
    setup: { handovers: { [HID]: OLD() } },
    steps: [{ ingress: 'if0', input: post(p(1)).subarray(0, 16), verdict: XdpAction.DROP }],
    stats: { shim_malformed: 1n },
  },

  // ---- hold
  {
    name: 'NEW, HOLDING: a POST frame is held: XDP_DROP, slot 0 = the frame without shim, tail and held advance',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 0: full(p(1)), 1: { len: 0, ready: 0 } },
  },
  {
    name: 'NEW: frames are stored in arrival order (slots 0, 1, 2)',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), hold(2), hold(3)],
    ho: { [HID]: { post_seen: 3n, tail: [3, 0], held: [3n, 0n] } },
    stats: { stripped: 3n, held: 3n },
    slots: { 0: full(p(1)), 1: full(p(2)), 2: full(p(3)), 3: { len: 0, ready: 0 } },
  },
  {
    name: 'NEW: a PRE frame is held as well (the hold does not look at the phase)',
    setup: { handovers: { [HID]: NEW() } },
    steps: [{ ingress: 'if0', input: pre(p(1)), verdict: XdpAction.DROP }],
    ho: { [HID]: { pre_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 0: full(p(1)) },
  },
  {
    name: 'NEW on ring 1, side 1: the frame goes to slot (1*2+1)*4 = 12',
    setup: { handovers: { [HID]: NEW({ ring: 1 }) } },
    steps: [hold(5, 'if1')],
    ho: { [HID]: { post_seen: 1n, tail: [0, 1], held: [0n, 1n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 12: full(p(5)), 0: { len: 0, ready: 0 }, 4: { len: 0, ready: 0 }, 8: { len: 0, ready: 0 } },
  },
  {
    name: 'NEW on ring 1, side 0: the frame goes to slot (1*2+0)*4 = 8',
    setup: { handovers: { [HID]: NEW({ ring: 1 }) } },
    steps: [hold(6, 'if0')],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 8: full(p(6)), 0: { len: 0, ready: 0 }, 4: { len: 0, ready: 0 } },
  },
  {
    name: 'ring positions wrap: head = tail = 6 stores into slot 6 % 4 = 2',
    setup: { handovers: { [HID]: NEW({ head: [6, 0], tail: [6, 0] }) } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [7, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 2: full(p(1)), 0: { len: 0, ready: 0 } },
  },
  {
    name: `overflow once the ring is full: the 5th frame (capacity ${CAP}) is dropped and counted`,
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), hold(2), hold(3), hold(4), hold(5)],
    ho: { [HID]: { post_seen: 5n, tail: [4, 0], held: [4n, 0n], overflow: [1n, 0n] } },
    stats: { stripped: 5n, held: 4n, overflow: 1n },
    slots: { 0: full(p(1)), 1: full(p(2)), 2: full(p(3)), 3: full(p(4)) },
  },
  {
    name: 'overflow is about frames in the ring (tail - head), not positions: head 2, tail 6 is full',
    setup: { handovers: { [HID]: NEW({ head: [2, 0], tail: [6, 0] }) } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, overflow: [1n, 0n] } },
    stats: { stripped: 1n, overflow: 1n },
  },
  {
    name: `a frame of exactly SHARP_MAX_FRAME (${SHARP_MAX_FRAME}) bytes is held whole`,
    setup: { handovers: { [HID]: NEW() } },
    steps: [{ ingress: 'if0', input: post(big(SHARP_MAX_FRAME)), verdict: XdpAction.DROP }],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 0: full(big(SHARP_MAX_FRAME)) },
  },
  {
    name: `a frame longer than SHARP_MAX_FRAME (${SHARP_MAX_FRAME + 1}): dropped, too_big, overflow[side]`,
    setup: { handovers: { [HID]: NEW() } },
    steps: [{ ingress: 'if0', input: post(big(SHARP_MAX_FRAME + 1)), verdict: XdpAction.DROP }],
    ho: { [HID]: { post_seen: 1n, overflow: [1n, 0n] } },
    stats: { stripped: 1n, too_big: 1n },
    slots: { 0: { len: 0, ready: 0 } },
  },
  {
    name: `ring index ${RINGS} (>= ring_count): config_error, dropped, overflow[side]`,
    setup: { handovers: { [HID]: NEW({ ring: RINGS }) } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, overflow: [1n, 0n] } },
    stats: { stripped: 1n, config_error: 1n },
  },
  {
    name: 'slots sized for fewer rings than ring_count: the missing ring is a config error',
    setup: { handovers: { [HID]: NEW({ ring: 1 }) }, load: { slots: 3 * CAP } },
    steps: [hold(1, 'if1'), hold(2, 'if0')],
    ho: { [HID]: { post_seen: 2n, tail: [1, 0], held: [1n, 0n], overflow: [0n, 1n] } },
    stats: { stripped: 2n, config_error: 1n, held: 1n },
    slots: { 8: full(p(2)) },
  },
  {
    name: 'NEW with side 0 PASSING, side 1 HOLDING: side 0 passes to the VNF, side 1 holds',
    setup: { handovers: { [HID]: NEW({ state: [PASSING, HOLDING] }) } },
    steps: [
      { ingress: 'if0', input: post(p(1)), verdict: XdpAction.PASS, output: p(1) },
      { ingress: 'if1', input: post(p(2)), verdict: XdpAction.DROP },
    ],
    ho: { [HID]: { post_seen: 2n, passed: [1n, 0n], tail: [0, 1], held: [0n, 1n] } },
    stats: { stripped: 2n, held: 1n, chain_missing: 1n },
    slots: { 4: full(p(2)) },
  },
  {
    name: 'release requested, ring empty and flushed (flushed_head == head): the frame passes and the side flips to PASSING',
    setup: { handovers: { [HID]: NEW({ head: [3, 0], tail: [3, 0] }) }, releaseCtl: { 0: { requested: 1, flushed_head: 3 } } },
    steps: [
      { ingress: 'if0', input: post(p(1)), verdict: XdpAction.PASS, output: p(1) },
      { ingress: 'if0', input: post(p(2)), verdict: XdpAction.PASS, output: p(2) },
    ],
    ho: { [HID]: { post_seen: 2n, state: [PASSING, HOLDING], passed: [2n, 0n] } },
    stats: { stripped: 2n, chain_missing: 2n },
  },
  {
    name: 'release requested but the replayed frames are not flushed yet (flushed_head < head): held',
    setup: { handovers: { [HID]: NEW({ head: [3, 0], tail: [3, 0] }) }, releaseCtl: { 0: { requested: 1, flushed_head: 2 } } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [4, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 3: full(p(1)) },
  },
  {
    name: 'release requested, frames still in the ring: the new frame queues behind them',
    setup: { handovers: { [HID]: NEW({ head: [0, 0], tail: [1, 0] }) }, releaseCtl: { 0: { requested: 1, flushed_head: 0 } }, slots: { 0: full(p(1)) } },
    steps: [hold(2)],
    ho: { [HID]: { post_seen: 1n, tail: [2, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
    slots: { 0: full(p(1)), 1: full(p(2)) },
  },
  {
    name: 'release requested, ring empty but a replay is copying a slot (replaying = 1): held',
    setup: { handovers: { [HID]: NEW({ replaying: [1, 0] }) }, releaseCtl: { 0: { requested: 1, flushed_head: 0 } } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
  },
  {
    name: 'release not requested, ring empty: held (an empty ring alone does not release)',
    setup: { handovers: { [HID]: NEW() }, releaseCtl: { 0: { requested: 0, flushed_head: 0 } } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
  },
  {
    name: "release requested on ring 1 does not release ring 0's handover",
    setup: { handovers: { [HID]: NEW() }, releaseCtl: { 2: { requested: 1, flushed_head: 0 } } },
    steps: [hold(1)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
  },

  // ---- replay
  {
    name: 'agent_replay pops the held frames in arrival order, then reports empty',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), hold(2), hold(3), replay('if0', XdpAction.PASS, p(1)), replay('if0', XdpAction.PASS, p(2)), replay('if0', XdpAction.PASS, p(3)), replay('if0', XdpAction.DROP)],
    ho: { [HID]: { post_seen: 3n, head: [3, 0], tail: [3, 0], held: [3n, 0n], released: [3n, 0n] } },
    stats: { stripped: 3n, held: 3n, replayed: 3n, chain_missing: 3n, replay_empty: 1n },
    slots: { 0: done(p(1)), 1: done(p(2)), 2: done(p(3)) },
  },
  {
    name: 'holding and replaying interleaved keep arrival order',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), hold(2), replay('if0', XdpAction.PASS, p(1)), hold(3), replay('if0', XdpAction.PASS, p(2)), replay('if0', XdpAction.PASS, p(3))],
    ho: { [HID]: { post_seen: 3n, head: [3, 0], tail: [3, 0], held: [3n, 0n], released: [3n, 0n] } },
    stats: { stripped: 3n, held: 3n, replayed: 3n, chain_missing: 3n },
  },
  {
    name: 'replay across the ring boundary: 4 held, 2 replayed, 2 more held into slots 0 and 1, all 6 in order',
    setup: { handovers: { [HID]: NEW() } },
    steps: [
      hold(1),
      hold(2),
      hold(3),
      hold(4),
      replay('if0', XdpAction.PASS, p(1)),
      replay('if0', XdpAction.PASS, p(2)),
      hold(5),
      hold(6),
      hold(7), // ring full again: overflow
      ...[3, 4, 5, 6].map((i) => replay('if0', XdpAction.PASS, p(i))),
    ],
    ho: { [HID]: { post_seen: 7n, head: [6, 0], tail: [6, 0], held: [6n, 0n], released: [6n, 0n], overflow: [1n, 0n] } },
    stats: { stripped: 7n, held: 6n, overflow: 1n, replayed: 6n, chain_missing: 6n },
    slots: { 0: done(p(5)), 1: done(p(6)), 2: done(p(3)), 3: done(p(4)) },
  },
  {
    name: 'replay with the VNF chained: replayed frames go through the VNF (stamps 1, 2) and are redirected',
    setup: { handovers: { [HID]: NEW() }, chain: true },
    steps: [hold(1), hold(2), replay('if0', XdpAction.REDIRECT, stamped(1, 1)), replay('if0', XdpAction.REDIRECT, stamped(2, 2))],
    ho: { [HID]: { post_seen: 2n, head: [2, 0], tail: [2, 0], held: [2n, 0n], released: [2n, 0n] } },
    stats: { stripped: 2n, held: 2n, replayed: 2n },
    extra: (t, env) => t.same(vnfFlow(env), { packets: 2n, bytes: BigInt(p(1).length + p(2).length) }, 'the VNF counted both replayed frames'),
  },
  {
    name: "replay on side 1 pops side 1's ring only",
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1, 'if0'), hold(2, 'if1'), replay('if1', XdpAction.PASS, p(2)), replay('if1', XdpAction.DROP)],
    ho: { [HID]: { post_seen: 2n, head: [0, 1], tail: [1, 1], held: [1n, 1n], released: [0n, 1n] } },
    stats: { stripped: 2n, held: 2n, replayed: 1n, chain_missing: 1n, replay_empty: 1n },
    slots: { 0: full(p(1)), 4: done(p(2)) },
  },
  {
    name: 'replay_ctl names a hid that has no handover: XDP_ABORTED, config_error',
    setup: { handovers: { [HID]: NEW() }, replayCtl: [43, 43] },
    steps: [hold(1), replay('if0', XdpAction.ABORTED)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n, config_error: 1n },
  },
  {
    name: 'replay on an interface the agent does not know: XDP_ABORTED, config_error',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), replay('lo', XdpAction.ABORTED)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n, config_error: 1n },
  },
  {
    name: 'replay of a handover with a bad ring: XDP_ABORTED, config_error',
    setup: { handovers: { [HID]: NEW({ ring: 7, tail: [1, 0] }) } },
    steps: [replay('if0', XdpAction.ABORTED)],
    stats: { config_error: 1n },
  },
  {
    name: 'slot not published yet (tail advanced, ready 0): replay_empty, head stays',
    setup: { handovers: { [HID]: NEW({ tail: [1, 0] }) }, slots: { 0: { len: 80, ready: 0, data: p(1) } } },
    steps: [replay('if0', XdpAction.DROP)],
    stats: { replay_empty: 1n },
  },
  {
    name: 'a replay already copying this side (replaying = 1): replay_empty, nothing popped twice',
    setup: { handovers: { [HID]: NEW({ tail: [1, 0], replaying: [1, 0] }) }, slots: { 0: full(p(1)) } },
    steps: [replay('if0', XdpAction.DROP)],
    stats: { replay_empty: 1n },
    slots: { 0: full(p(1)) },
  },
  {
    name: 'tombstone slot (ready, len 0): dropped from the ring, replay_failed, XDP_ABORTED; the next frame follows',
    setup: { handovers: { [HID]: NEW({ tail: [2, 0] }) }, slots: { 0: { len: 0, ready: 1 }, 1: full(p(2)) } },
    steps: [replay('if0', XdpAction.ABORTED), replay('if0', XdpAction.PASS, p(2))],
    ho: { [HID]: { head: [2, 0], released: [1n, 0n], replay_failed: [1n, 0n] } },
    stats: { replay_error: 1n, replayed: 1n, chain_missing: 1n },
    slots: { 0: { len: 0, ready: 0 }, 1: done(p(2)) },
  },
  {
    name: `slot with an impossible length (${SHARP_MAX_FRAME + 1}): treated as a tombstone`,
    setup: { handovers: { [HID]: NEW({ tail: [1, 0] }) }, slots: { 0: { len: SHARP_MAX_FRAME + 1, ready: 1, data: p(1) } } },
    steps: [replay('if0', XdpAction.ABORTED)],
    ho: { [HID]: { head: [1, 0], replay_failed: [1n, 0n] } },
    stats: { replay_error: 1n },
  },
  {
    name: 'RELAY mode: the replayed frame gets shim(RELAY, hid) and leaves by XDP_TX, back towards its switch; the VNF is not run',
    setup: { handovers: { [HID]: NEW() }, chain: true, replayMode: { 0: SHARP_REPLAY_RELAY } },
    steps: [hold(1), hold(2), replay('if0', XdpAction.TX, relayed(p(1))), replay('if0', XdpAction.TX, relayed(p(2))), replay('if0', XdpAction.DROP)],
    ho: { [HID]: { post_seen: 2n, head: [2, 0], tail: [2, 0], held: [2n, 0n], released: [2n, 0n] } },
    stats: { stripped: 2n, held: 2n, replayed: 2n, relayed: 2n, replay_empty: 1n },
    slots: { 0: done(p(1)), 1: done(p(2)) },
    extra: (t, env) => t.equal(vnfFlow(env), undefined, 'the VNF saw nothing'),
  },
  {
    name: `RELAY mode, side 1, hid ${SHARP_HID_MAX}: tag 0xFFFF; side 0 (mode TO_VNF) still releases into the VNF`,
    setup: { handovers: { [SHARP_HID_MAX]: NEW() }, replayCtl: [SHARP_HID_MAX, SHARP_HID_MAX], replayMode: { 1: SHARP_REPLAY_RELAY } },
    steps: [
      { ingress: 'if1', input: post(p(1), SHARP_HID_MAX), verdict: XdpAction.DROP },
      { ingress: 'if0', input: post(p(2), SHARP_HID_MAX), verdict: XdpAction.DROP },
      replay('if1', XdpAction.TX, Buffer.concat([p(1).subarray(0, 12), Buffer.from([0x82, 0x1c, 0xff, 0xff]), p(1).subarray(12)])),
      replay('if0', XdpAction.PASS, p(2)),
    ],
    ho: { [SHARP_HID_MAX]: { post_seen: 2n, head: [1, 1], tail: [1, 1], held: [1n, 1n], released: [1n, 1n] } },
    stats: { stripped: 2n, held: 2n, replayed: 2n, relayed: 1n, chain_missing: 1n },
  },
  {
    name: `RELAY mode, a frame of exactly SHARP_MAX_FRAME (${SHARP_MAX_FRAME}) bytes: whole, 4 bytes longer on its way back`,
    setup: { handovers: { [HID]: NEW() }, replayMode: { 0: SHARP_REPLAY_RELAY } },
    steps: [{ ingress: 'if0', input: post(big(SHARP_MAX_FRAME)), verdict: XdpAction.DROP }, replay('if0', XdpAction.TX, relayed(big(SHARP_MAX_FRAME)))],
    ho: { [HID]: { post_seen: 1n, head: [1, 0], tail: [1, 0], held: [1n, 0n], released: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n, replayed: 1n, relayed: 1n },
  },
  {
    name: `RELAY mode, replay_ctl names hid ${SHARP_HID_MAX + 1} (a tag cannot carry it): XDP_ABORTED, config_error, the frame stays in the ring`,
    setup: { handovers: { [SHARP_HID_MAX + 1]: NEW({ tail: [1, 0] }) }, replayCtl: [SHARP_HID_MAX + 1, SHARP_HID_MAX + 1], replayMode: { 0: SHARP_REPLAY_RELAY }, slots: { 0: full(p(1)) } },
    steps: [replay('if0', XdpAction.ABORTED)],
    stats: { config_error: 1n },
    slots: { 0: full(p(1)) },
  },
  {
    name: 'RELAY_DIRECT mode (BMv2 lab): the replayed frame is redirected out through relay_tx[side] unmarked, the VNF is not run',
    setup: { handovers: { [HID]: NEW() }, chain: true, replayMode: { 0: SHARP_REPLAY_RELAY_DIRECT }, relayTx: { 0: 'if1' } },
    steps: [hold(1), replay('if0', XdpAction.REDIRECT, p(1))],
    ho: { [HID]: { post_seen: 1n, head: [1, 0], tail: [1, 0], held: [1n, 0n], released: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n, replayed: 1n },
    extra: (t, env) => t.equal(vnfFlow(env), undefined, 'the VNF saw nothing'),
  },
  {
    // bpf_redirect_map(relay_tx, side, XDP_ABORTED): the frame has left the
    // ring (head advanced) and is counted as released and replayed, but it
    // is aborted — see the report.
    name: 'RELAY_DIRECT mode without a relay_tx entry: XDP_ABORTED after the frame left the ring',
    setup: { handovers: { [HID]: NEW() }, replayMode: { 0: SHARP_REPLAY_RELAY_DIRECT } },
    steps: [hold(1), replay('if0', XdpAction.ABORTED)],
    ho: { [HID]: { post_seen: 1n, head: [1, 0], tail: [1, 0], held: [1n, 0n], released: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n, replayed: 1n },
  },

  // ---- release_finish
  {
    name: 'finish with frames in the ring: AGAIN (XDP_DROP), side stays HOLDING',
    setup: { handovers: { [HID]: NEW() } },
    steps: [hold(1), finish('if0', SHARP_FINISH_AGAIN)],
    ho: { [HID]: { post_seen: 1n, tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 1n, held: 1n },
  },
  {
    name: 'pass-through only after the ring is delivered: AGAIN holds newcomers behind the ring, DONE lets them pass',
    setup: { handovers: { [HID]: NEW() } },
    steps: [
      hold(1),
      hold(2),
      finish('if0', SHARP_FINISH_AGAIN),
      hold(3), // arrives while the release is under way: queued behind 1 and 2
      replay('if0', XdpAction.PASS, p(1)),
      replay('if0', XdpAction.PASS, p(2)),
      finish('if0', SHARP_FINISH_AGAIN),
      replay('if0', XdpAction.PASS, p(3)),
      finish('if0', SHARP_FINISH_DONE),
      { ingress: 'if0', input: post(p(4)), verdict: XdpAction.PASS, output: p(4) },
      { ingress: 'if0', input: post(p(5)), verdict: XdpAction.PASS, output: p(5) },
      finish('if0', SHARP_FINISH_DONE),
    ],
    ho: { [HID]: { post_seen: 5n, state: [PASSING, HOLDING], head: [3, 0], tail: [3, 0], held: [3n, 0n], released: [3n, 0n], passed: [2n, 0n] } },
    stats: { stripped: 5n, held: 3n, replayed: 3n, chain_missing: 5n },
  },
  {
    name: 'with the VNF chained, frames passing after DONE continue the counter of the replayed ones',
    setup: { handovers: { [HID]: NEW() }, chain: true },
    steps: [
      hold(1),
      hold(2),
      replay('if0', XdpAction.REDIRECT, stamped(1, 1)),
      replay('if0', XdpAction.REDIRECT, stamped(2, 2)),
      finish('if0', SHARP_FINISH_DONE),
      { ingress: 'if0', input: post(p(3)), verdict: XdpAction.REDIRECT, output: stamped(3, 3) },
    ],
    ho: { [HID]: { post_seen: 3n, state: [PASSING, HOLDING], head: [2, 0], tail: [2, 0], held: [2n, 0n], released: [2n, 0n], passed: [1n, 0n] } },
    stats: { stripped: 3n, held: 2n, replayed: 2n },
  },
  {
    name: 'finish on side 1 flips side 1 only',
    setup: { handovers: { [HID]: NEW() } },
    steps: [finish('if1', SHARP_FINISH_DONE), { ingress: 'if1', input: post(p(1)), verdict: XdpAction.PASS, output: p(1) }, hold(2, 'if0')],
    ho: { [HID]: { post_seen: 2n, state: [HOLDING, PASSING], passed: [0n, 1n], tail: [1, 0], held: [1n, 0n] } },
    stats: { stripped: 2n, held: 1n, chain_missing: 1n },
  },
  {
    name: 'finish while a replay is copying (replaying = 1): AGAIN',
    setup: { handovers: { [HID]: NEW({ replaying: [1, 0] }) } },
    steps: [finish('if0', SHARP_FINISH_AGAIN)],
  },
  {
    name: 'finish on a handover with role OLD: ERROR (XDP_ABORTED), config_error',
    setup: { handovers: { [HID]: OLD() } },
    steps: [finish('if0', SHARP_FINISH_ERROR)],
    stats: { config_error: 1n },
  },
  {
    name: 'finish when replay_ctl names no handover: ERROR, config_error',
    setup: { handovers: { [HID]: NEW() }, replayCtl: [0, 0] },
    steps: [finish('if0', SHARP_FINISH_ERROR)],
    stats: { config_error: 1n },
  },
];

// ------------------------------------------------------------------ runner

const FLOW_KEY = sharpFlowKeyCodec.encode({ saddr: ipv4Number(FLOW.srcIp), daddr: ipv4Number(FLOW.dstIp), sport: FLOW.srcPort, dport: FLOW.dstPort, proto: IPPROTO_UDP });

function vnfFlow(env: Env): SharpVnfFlowState | undefined {
  const v = env.vnf?.map('flow_state').lookup(FLOW_KEY);
  return v === undefined ? undefined : sharpVnfFlowStateCodec.decode(v);
}

function loadAgent(ports: TestPorts, s: Setup): Env {
  const cap = s.load?.ringCapacity ?? CAP;
  const rings = s.load?.ringCount ?? RINGS;
  const spec = BpfObjectSpec.open(programObject('agent'));
  spec.setConstants(rodataLayouts['agent']!, { ring_capacity: cap, ring_count: rings });
  spec.setMaxEntries('slots', s.load?.slots ?? rings * 2 * cap);
  spec.setMaxEntries('release_ctl', rings * 2);
  const agent = spec.load();
  let vnf: BpfCollection | undefined;
  try {
    const ix = ports.ifindex;
    const ifaces = agent.map('ifaces');
    ifaces.update(u32.encode(ix['if0']!), sharpAgentIfaceCodec.encode({ side: 0, accept_shim: 1 }));
    ifaces.update(u32.encode(ix['if1']!), sharpAgentIfaceCodec.encode({ side: 1, accept_shim: 1 }));
    ifaces.update(u32.encode(ix['ifr']!), sharpAgentIfaceCodec.encode({ side: 0, accept_shim: 0 }));
    ifaces.update(u32.encode(ix['ifbad']!), sharpAgentIfaceCodec.encode({ side: 2, accept_shim: 1 }));
    for (const [hid, v] of Object.entries(s.handovers ?? {})) agent.map('handovers').update(u32.encode(Number(hid)), sharpAgentHoCodec.encode(v), MapUpdate.NOEXIST);
    const [c0, c1] = s.replayCtl ?? [HID, HID];
    agent.map('replay_ctl').update(u32.encode(0), u32.encode(c0));
    agent.map('replay_ctl').update(u32.encode(1), u32.encode(c1));
    for (const [k, v] of Object.entries(s.releaseCtl ?? {})) agent.map('release_ctl').update(u32.encode(Number(k)), sharpReleaseCtlCodec.encode(v));
    for (const [k, v] of Object.entries(s.replayMode ?? {})) agent.map('replay_mode').update(u32.encode(Number(k)), u32.encode(v));
    withNetns(ports.netns, () => {
      for (const [k, v] of Object.entries(s.relayTx ?? {})) agent.map('relay_tx').update(u32.encode(Number(k)), u32.encode(ix[v]!));
    });
    for (const [k, v] of Object.entries(s.slots ?? {})) agent.map('slots').update(u32.encode(Number(k)), sharpSlotCodec.encode(v));
    if (s.chain) {
      vnf = BpfObjectSpec.open(programObject('vnf_counter')).load();
      vnf.map('vnf_ports').update(u32.encode(ix['if0']!), u32.encode(1));
      vnf.map('vnf_ports').update(u32.encode(ix['if1']!), u32.encode(0));
      withNetns(ports.netns, () => {
        vnf!.map('vnf_tx').update(u32.encode(0), u32.encode(ix['if0']!));
        vnf!.map('vnf_tx').update(u32.encode(1), u32.encode(ix['if1']!));
      });
      agent.map('vnf_chain').update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnf.program('vnf_counter').fd));
    }
  } catch (e) {
    vnf?.close();
    agent.close();
    throw e;
  }
  return { agent, vnf, ports };
}

function runStep(env: Env, s: Step): { retval: number; out: Buffer } {
  const prog = env.agent.program(s.prog ?? 'agent');
  const data = s.input ?? TEMPLATE;
  const r = prog.run({ data, dataOutSize: 4096, context: xdpMd({ dataLen: data.length, ingressIfindex: env.ports.ifindex[s.ingress]! }), netns: env.ports.netns });
  return { retval: r.retval, out: r.dataOut! };
}

const hoFields = ({ lock: _lock, ...rest }: SharpAgentHo): Ho => rest;

t.test('agent: verdicts, output frames, handover state, ring slots and counters', async (t) => {
  const ports = testPorts(t, 'ag', ['if0', 'if1', 'ifr', 'ifbad']);
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const env = loadAgent(ports, c.setup);
      t.teardown(() => {
        env.agent.close();
        env.vnf?.close();
      });
      c.steps.forEach((s, i) => {
        const r = runStep(env, s);
        const what = `step ${i + 1} (${s.prog ?? 'agent'} on ${s.ingress})`;
        t.equal(r.retval, s.verdict, `${what}: verdict`);
        if (s.output !== null && s.verdict !== XdpAction.DROP && s.verdict !== XdpAction.ABORTED) {
          const want = s.output ?? s.input!;
          t.equal(r.out.toString('hex'), want.toString('hex'), `${what}: output frame`);
        }
      });

      const hos = env.agent.map('handovers');
      for (const [hid, setup] of Object.entries(c.setup.handovers ?? {})) {
        const raw = hos.lookup(u32.encode(Number(hid)));
        t.ok(raw, `handover ${hid} still exists`);
        if (raw === undefined) continue;
        t.same(hoFields(sharpAgentHoCodec.decode(raw)), { ...HO_ZERO, ...setup, ...(c.ho?.[Number(hid)] ?? {}) }, `handovers[${hid}]`);
      }
      const stats = sumPerCpu(env.agent.map('agent_stats').typed(u32, sharpAgentStatsCodec).getPerCpu(0));
      t.same(stats, counters(STATS_ZERO, c.stats ?? {}), 'agent_stats');
      for (const [idx, want] of Object.entries(c.slots ?? {})) {
        const got = sharpSlotCodec.decode(env.agent.map('slots').lookup(u32.encode(Number(idx)))!);
        t.same({ len: got.len, ready: got.ready }, { len: want.len, ready: want.ready }, `slots[${idx}] len and ready`);
        if (want.data !== undefined) t.equal(got.data.subarray(0, want.len).toString('hex'), want.data.toString('hex'), `slots[${idx}] holds the frame without shim`);
      }
      c.extra?.(t, env);
    });
  }
});

/**
 * A live-frames rig: an agent (one 64-frame ring) whose side 0 is veth-a,
 * handover HID armed NEW and named in replay_ctl[0], and probe_sink on the
 * peer veth-b (a veth receiving redirected frames needs an XDP program).
 */
function liveRig(t: Test, tag: string): { nsA: string; ifA: number; agent: BpfCollection; sink: BpfCollection; holdAll: (frames: readonly Buffer[]) => void } {
  const { nsA, nsB } = testVethPair(t, tag);
  const ifA = ifindexOf('veth-a', nsA);
  const spec = BpfObjectSpec.open(programObject('agent'));
  spec.setConstants(rodataLayouts['agent']!, { ring_capacity: 64, ring_count: 1 });
  spec.setMaxEntries('slots', 2 * 64);
  spec.setMaxEntries('release_ctl', 2);
  const agent = spec.load();
  t.teardown(() => agent.close());
  const sink = BpfObjectSpec.open(testObject('probe_sink')).load();
  t.teardown(() => sink.close());
  const link = sink.program('probe_sink').attachXdp('veth-b', { netns: nsB });
  t.teardown(() => link.close());
  agent.map('ifaces').update(u32.encode(ifA), sharpAgentIfaceCodec.encode({ side: 0, accept_shim: 1 }));
  agent.map('handovers').update(u32.encode(HID), sharpAgentHoCodec.encode(NEW()), MapUpdate.NOEXIST);
  agent.map('replay_ctl').update(u32.encode(0), u32.encode(HID));
  const holdAll = (frames: readonly Buffer[]): void => {
    for (const f of frames) {
      const m = post(f);
      const r = agent.program('agent').run({ data: m, context: xdpMd({ dataLen: m.length, ingressIfindex: ifA }), netns: nsA });
      if (r.retval !== XdpAction.DROP) t.fail(`frame not held: verdict ${r.retval}`);
    }
  };
  return { nsA, ifA, agent, sink, holdAll };
}

t.test('agent, live frames: K held probes replayed with ONE test run, through the VNF and out of a veth, in order', async (t) => {
  const K = 48;
  const { nsA, ifA, agent, sink, holdAll } = liveRig(t, 'agl');
  const vnf = BpfObjectSpec.open(programObject('vnf_counter')).load();
  t.teardown(() => vnf.close());
  agent.map('vnf_chain').update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnf.program('vnf_counter').fd));
  // the VNF sends what arrives on veth-a back out of veth-a, towards veth-b
  vnf.map('vnf_ports').update(u32.encode(ifA), u32.encode(0));
  withNetns(nsA, () => vnf.map('vnf_tx').update(u32.encode(0), u32.encode(ifA)));

  // frames of varying length (the replay resizes the template to each)
  // (at most 128 bytes: the sink keeps that much of each frame)
  const probe = (i: number, stamp = 0n): Buffer => probeFrame({ seq: BigInt(i + 1), flow: 1, extra: (i * 37) % 54, stamp }, FLOW, { srcMac: '02:00:00:00:00:0a', dstMac: '02:00:00:00:00:0b' });
  const frames = Array.from({ length: K }, (_, i) => probe(i));
  const expected = Array.from({ length: K }, (_, i) => probe(i, BigInt(i + 1)));
  t.ok(frames.every((f) => checksumsValid(f)), 'frames built with complete checksums');
  holdAll(frames);
  let ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
  t.same([ho.head[0], ho.tail[0], ho.held[0]], [0, K, BigInt(K)], `${K} frames held`);
  t.equal(sinkCount(sink), 0, 'nothing reached the peer while holding');

  const r = await agent.program('agent_replay').runAsync({ data: TEMPLATE, liveFrames: true, repeat: K, netns: nsA, context: xdpMd({ dataLen: TEMPLATE.length, ingressIfindex: ifA }) });
  t.equal(r.retval, 0, 'live mode reports no verdict');
  for (let i = 0; i < 200 && sinkCount(sink) < K; i++) await sleep(10);
  t.equal(sinkCount(sink), K, `all ${K} frames arrived at veth-b`);

  const got = sinkRecords(sink);
  t.same(
    got.map((g) => g.len),
    frames.map((f) => f.length),
    'each arrived with its own length, in order',
  );
  const probes = got.map((g) => sharpProbeCodec.decode(g.data, 42));
  t.same(
    probes.map((x) => x.seq),
    frames.map((_, i) => BigInt(i + 1)),
    'sequence numbers 1..K in order',
  );
  t.same(
    probes.map((x) => x.stamp),
    probes.map((x) => x.seq),
    'the VNF stamped its per-flow counter: stamp == seq on every frame',
  );
  t.ok(
    got.every((g) => g.data.readUInt16BE(12) === 0x0800),
    'no frame carries a shim',
  );
  t.ok(
    got.every((g) => checksumsValid(g.data)),
    'IPv4 and UDP checksums valid on every frame after stamping',
  );
  t.same(
    got.map((g) => g.data.toString('hex')),
    expected.map((f) => f.toString('hex')),
    'every frame arrived byte for byte as sent, with only the stamp (and the UDP checksum) rewritten',
  );

  ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
  t.same([ho.head[0], ho.tail[0], ho.released[0], ho.replay_failed[0]], [K, K, BigInt(K), 0n], 'the ring is empty, every frame released');
  const fin = agent.program('agent_release_finish').run({ data: TEMPLATE, context: xdpMd({ dataLen: TEMPLATE.length, ingressIfindex: ifA }), netns: nsA });
  t.equal(fin.retval, SHARP_FINISH_DONE, 'release_finish: DONE');
});

t.test('agent, live frames, RELAY mode: K held probes go back out of the interface they came in on (XDP_TX), marked RELAY, in order', async (t) => {
  // BPF_PROG_TEST_RUN with live frames has no driver to do an XDP_TX: the
  // kernel turns it into a redirect to the run's ingress device, i.e. the
  // frame is transmitted by veth-a and arrives at its peer veth-b, where
  // (in a deployment) the switch port that sent it sits.
  const K = 48;
  const { nsA, ifA, agent, sink, holdAll } = liveRig(t, 'agr');
  agent.map('replay_mode').update(u32.encode(0), u32.encode(SHARP_REPLAY_RELAY));

  // at most 124 bytes: with the shim the sink still keeps every byte
  const probe = (i: number): Buffer => probeFrame({ seq: BigInt(i + 1), flow: 1, extra: (i * 37) % 50 }, FLOW, { srcMac: '02:00:00:00:00:0a', dstMac: '02:00:00:00:00:0b' });
  const frames = Array.from({ length: K }, (_, i) => probe(i));
  holdAll(frames);
  t.equal(sinkCount(sink), 0, 'nothing reached the peer while holding');

  const r = await agent.program('agent_replay').runAsync({ data: TEMPLATE, liveFrames: true, repeat: K, netns: nsA, context: xdpMd({ dataLen: TEMPLATE.length, ingressIfindex: ifA }) });
  t.equal(r.retval, 0, 'live mode reports no verdict');
  for (let i = 0; i < 200 && sinkCount(sink) < K; i++) await sleep(10);
  t.equal(sinkCount(sink), K, `all ${K} frames left by veth-a and arrived at its peer`);
  const got = sinkRecords(sink);
  t.same(
    got.map((g) => g.data.toString('hex')),
    frames.map((f) => relayed(f).toString('hex')),
    'each frame arrived whole, with shim(RELAY, hid) in front of its EtherType, in ring order',
  );
  const ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
  t.same([ho.head[0], ho.tail[0], ho.released[0], ho.replay_failed[0]], [K, K, BigInt(K), 0n], 'the ring is empty, every frame released');
  const st = sumPerCpu(agent.map('agent_stats').typed(u32, sharpAgentStatsCodec).getPerCpu(0));
  t.same([st.replayed, st.relayed], [BigInt(K), BigInt(K)], 'every frame counted as replayed and relayed');
});
