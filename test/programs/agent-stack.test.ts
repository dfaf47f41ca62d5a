// The agent in STACK mode (vnf_mode = SHARP_VNF_STACK: the VNF is the host's
// own stack, VNF kind 'linux'). Table cases run frames through agent /
// agent_replay with BPF_PROG_TEST_RUN and check verdict, output frame and
// counters: everything for the VNF is XDP_PASS (never a tail call, even with
// a program in vnf_chain), unicast frames re-addressed to stack_mac[side],
// strip / count / hold exactly as in XDP mode. The last test holds K UDP
// datagrams and replays them with ONE live-frames test run: they enter the
// namespace's stack through the ingress device and reach a UDP socket, in
// order.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BpfObjectSpec, XdpAction, u32, xdpMd, MapUpdate, ifindexOf, type BpfCollection } from '../../src/bpf/index.js';
import {
  sharpAgentHoCodec,
  sharpAgentIfaceCodec,
  sharpAgentStatsCodec,
  sharpMacCodec,
  rodataLayouts,
  SHARP_AGENT_OLD,
  SHARP_AGENT_NEW,
  SHARP_HOLD_HOLDING,
  SHARP_HOLD_PASSING,
  SHARP_PHASE_PRE,
  SHARP_PHASE_POST,
  SHARP_VNF_STACK,
  SHARP_VNF_CHAIN_INDEX,
  SHARP_FINISH_DONE,
  type SharpAgentStats,
} from '../../src/generated/abi.js';
import { macBytes, udpFrame } from '../../src/net/frame.js';
import { programObject } from '../helpers/env.js';
import { testVethPair } from '../helpers/netns.js';
import { probeFrame, withShim, sumPerCpu, counters, testPorts, MAC_B, type TestPorts } from '../helpers/programs.js';

const HID = 42;
const CAP = 4;
const MAC0 = '02:00:00:00:aa:00';
const MAC1 = '02:00:00:00:aa:01';
const TEMPLATE = Buffer.alloc(64);
const STATS_ZERO = sharpAgentStatsCodec.decode(Buffer.alloc(sharpAgentStatsCodec.size));

const p = (i: number): Buffer => probeFrame({ seq: BigInt(i), flow: 3, extra: i });
/** frame f with its destination MAC replaced */
const to = (f: Buffer, mac: string): Buffer => {
  const c = Buffer.from(f);
  macBytes(mac).copy(c, 0);
  return c;
};

function loadStackAgent(ports: TestPorts, o: { macs?: boolean; chainVnf?: boolean; rings?: number } = {}): { agent: BpfCollection; vnf?: BpfCollection } {
  const spec = BpfObjectSpec.open(programObject('agent'));
  const rings = o.rings ?? 1;
  spec.setConstants(rodataLayouts['agent']!, { ring_capacity: CAP, ring_count: rings, vnf_mode: SHARP_VNF_STACK });
  spec.setMaxEntries('slots', rings * 2 * CAP);
  spec.setMaxEntries('release_ctl', rings * 2);
  const agent = spec.load();
  const ix = ports.ifindex;
  agent.map('ifaces').update(u32.encode(ix['if0']!), sharpAgentIfaceCodec.encode({ side: 0, accept_shim: 1 }));
  agent.map('ifaces').update(u32.encode(ix['if1']!), sharpAgentIfaceCodec.encode({ side: 1, accept_shim: 1 }));
  if (o.macs !== false) {
    agent.map('stack_mac').update(u32.encode(0), sharpMacCodec.encode({ addr: macBytes(MAC0), pad: Buffer.alloc(2) }));
    agent.map('stack_mac').update(u32.encode(1), sharpMacCodec.encode({ addr: macBytes(MAC1), pad: Buffer.alloc(2) }));
  }
  let vnf: BpfCollection | undefined;
  if (o.chainVnf) {
    vnf = BpfObjectSpec.open(programObject('vnf_counter')).load();
    agent.map('vnf_chain').update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnf.program('vnf_counter').fd));
  }
  return { agent, ...(vnf === undefined ? {} : { vnf }) };
}

function run(agent: BpfCollection, ports: TestPorts, prog: string, ingress: string, data: Buffer): { retval: number; out: Buffer } {
  const r = agent.program(prog).run({ data, dataOutSize: 4096, context: xdpMd({ dataLen: data.length, ingressIfindex: ports.ifindex[ingress]! }), netns: ports.netns });
  return { retval: r.retval, out: r.dataOut! };
}

const stats = (agent: BpfCollection): SharpAgentStats => sumPerCpu(agent.map('agent_stats').typed(u32, sharpAgentStatsCodec).getPerCpu(0));

t.test('agent, STACK mode: verdicts, re-addressing and counters', async (t) => {
  const ports = testPorts(t, 'ags', ['if0', 'if1']);

  await t.test('plain frame on side 0: XDP_PASS, destination = stack_mac[0], to_stack (no chain_missing)', async (t) => {
    const { agent } = loadStackAgent(ports);
    t.teardown(() => agent.close());
    const r = run(agent, ports, 'agent', 'if0', p(1));
    t.equal(r.retval, XdpAction.PASS);
    t.equal(r.out.toString('hex'), to(p(1), MAC0).toString('hex'), 'only the destination MAC changed');
    t.same(stats(agent), counters(STATS_ZERO, { passed_plain: 1n, to_stack: 1n }));
  });

  await t.test('plain frame on side 1: destination = stack_mac[1]', async (t) => {
    const { agent } = loadStackAgent(ports);
    t.teardown(() => agent.close());
    const r = run(agent, ports, 'agent', 'if1', p(2));
    t.equal(r.retval, XdpAction.PASS);
    t.equal(r.out.toString('hex'), to(p(2), MAC1).toString('hex'));
  });

  await t.test('a VNF program in vnf_chain is not called in STACK mode', async (t) => {
    const { agent, vnf } = loadStackAgent(ports, { chainVnf: true });
    t.teardown(() => {
      agent.close();
      vnf?.close();
    });
    const r = run(agent, ports, 'agent', 'if0', p(1));
    t.equal(r.retval, XdpAction.PASS, 'XDP_PASS, not the VNF verdict (vnf_counter would redirect or pass unstamped)');
    t.equal(r.out.toString('hex'), to(p(1), MAC0).toString('hex'), 'not stamped');
  });

  await t.test('broadcast / multicast destination: left as it is', async (t) => {
    const { agent } = loadStackAgent(ports);
    t.teardown(() => agent.close());
    for (const mac of ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01']) {
      const f = to(p(1), mac);
      const r = run(agent, ports, 'agent', 'if0', f);
      t.equal(r.retval, XdpAction.PASS);
      t.equal(r.out.toString('hex'), f.toString('hex'), `${mac} unchanged`);
    }
    t.equal(stats(agent).to_stack, 2n);
  });

  await t.test('stack_mac unset (all zero): the frame passes unchanged', async (t) => {
    const { agent } = loadStackAgent(ports, { macs: false });
    t.teardown(() => agent.close());
    const r = run(agent, ports, 'agent', 'if0', p(1));
    t.equal(r.retval, XdpAction.PASS);
    t.equal(r.out.toString('hex'), p(1).toString('hex'));
    t.equal(r.out.subarray(0, 6).toString('hex'), macBytes(MAC_B).toString('hex'));
  });

  await t.test('PRE shim at OLD: stripped, pre_seen and passed counted, re-addressed, XDP_PASS', async (t) => {
    const { agent } = loadStackAgent(ports);
    t.teardown(() => agent.close());
    agent.map('handovers').update(u32.encode(HID), sharpAgentHoCodec.encode({ role: SHARP_AGENT_OLD, ring: 0, state: [SHARP_HOLD_PASSING, SHARP_HOLD_PASSING] }), MapUpdate.NOEXIST);
    for (const i of [1, 2, 3]) {
      const r = run(agent, ports, 'agent', 'if0', withShim(p(i), SHARP_PHASE_PRE, HID));
      t.equal(r.retval, XdpAction.PASS);
      t.equal(r.out.toString('hex'), to(p(i), MAC0).toString('hex'), `frame ${i}: shim stripped, re-addressed`);
    }
    const ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
    t.same([ho.pre_seen, ho.passed[0]], [3n, 3n]);
    t.same(stats(agent), counters(STATS_ZERO, { stripped: 3n, to_stack: 3n }));
  });

  await t.test('NEW: POST frames held, replayed (one by one) to the stack re-addressed and in order, then finish DONE and newcomers pass', async (t) => {
    const { agent } = loadStackAgent(ports);
    t.teardown(() => agent.close());
    agent.map('handovers').update(u32.encode(HID), sharpAgentHoCodec.encode({ role: SHARP_AGENT_NEW, ring: 0, state: [SHARP_HOLD_HOLDING, SHARP_HOLD_HOLDING] }), MapUpdate.NOEXIST);
    agent.map('replay_ctl').update(u32.encode(1), u32.encode(HID));
    for (const i of [1, 2, 3]) t.equal(run(agent, ports, 'agent', 'if1', withShim(p(i), SHARP_PHASE_POST, HID)).retval, XdpAction.DROP, `frame ${i} held`);
    for (const i of [1, 2, 3]) {
      const r = run(agent, ports, 'agent_replay', 'if1', TEMPLATE);
      t.equal(r.retval, XdpAction.PASS, `replay ${i}: XDP_PASS into the stack`);
      t.equal(r.out.toString('hex'), to(p(i), MAC1).toString('hex'), `replay ${i}: frame ${i}, shim gone, addressed to side 1's interface`);
    }
    t.equal(run(agent, ports, 'agent_replay', 'if1', TEMPLATE).retval, XdpAction.DROP, 'ring empty: replay_empty');
    t.equal(run(agent, ports, 'agent_release_finish', 'if1', TEMPLATE).retval, SHARP_FINISH_DONE);
    const r = run(agent, ports, 'agent', 'if1', withShim(p(4), SHARP_PHASE_POST, HID));
    t.equal(r.retval, XdpAction.PASS, 'after the release a POST frame passes');
    t.equal(r.out.toString('hex'), to(p(4), MAC1).toString('hex'));
    const ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
    t.same([ho.held[1], ho.released[1], ho.passed[1], ho.state[1]], [3n, 3n, 1n, SHARP_HOLD_PASSING]);
    t.same(stats(agent), counters(STATS_ZERO, { stripped: 4n, held: 3n, replayed: 3n, replay_empty: 1n, to_stack: 4n }));
  });
});

t.test('agent, STACK mode, live frames: K held datagrams replayed with ONE test run reach a UDP socket of the namespace, in order', async (t) => {
  const K = 40;
  const PORT = 9123;
  const { nsA, a, b } = testVethPair(t, 'agsl');
  const ifA = ifindexOf('veth-a', nsA);
  const macA = a.mac!;
  const spec = BpfObjectSpec.open(programObject('agent'));
  spec.setConstants(rodataLayouts['agent']!, { ring_capacity: 64, ring_count: 1, vnf_mode: SHARP_VNF_STACK });
  spec.setMaxEntries('slots', 2 * 64);
  spec.setMaxEntries('release_ctl', 2);
  const agent = spec.load();
  t.teardown(() => agent.close());
  agent.map('ifaces').update(u32.encode(ifA), sharpAgentIfaceCodec.encode({ side: 0, accept_shim: 1 }));
  agent.map('stack_mac').update(u32.encode(0), sharpMacCodec.encode({ addr: macBytes(macA), pad: Buffer.alloc(2) }));
  agent.map('handovers').update(u32.encode(HID), sharpAgentHoCodec.encode({ role: SHARP_AGENT_NEW, ring: 0, state: [SHARP_HOLD_HOLDING, SHARP_HOLD_HOLDING] }), MapUpdate.NOEXIST);
  agent.map('replay_ctl').update(u32.encode(0), u32.encode(HID));

  // a UDP receiver in nsA on veth-a's address: prints each datagram's payload, exits after K
  const rx = spawn('ip', ['netns', 'exec', nsA, 'python3', '-u', '-c', `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('10.99.0.1', ${PORT}))
s.settimeout(10)
print('ready', flush=True)
for _ in range(${K}):
    d, _a = s.recvfrom(2048)
    print(d.decode(), flush=True)
`], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (rx.exitCode === null) rx.kill('SIGKILL');
  });
  const lines: string[] = [];
  const rl = createInterface({ input: rx.stdout! });
  await new Promise<void>((resolve, reject) => {
    rl.once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(l))));
    rx.once('exit', (c) => reject(new Error(`receiver exited ${c}`)));
  });
  rl.on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((r) => rx.once('exit', r));

  // frames from veth-b's side, addressed to a MAC that is NOT veth-a's: only the agent's re-addressing lets the stack take them
  const frames = Array.from({ length: K }, (_, i) =>
    udpFrame({ srcMac: b.mac!, dstMac: '02:00:00:00:77:77', srcIp: '10.99.0.2', dstIp: '10.99.0.1', srcPort: 5000, dstPort: PORT, payload: Buffer.from(`seq-${i + 1}${'.'.repeat(i % 17)}`) }),
  );
  for (const f of frames) {
    const m = withShim(f, SHARP_PHASE_POST, HID);
    const r = agent.program('agent').run({ data: m, context: xdpMd({ dataLen: m.length, ingressIfindex: ifA }), netns: nsA });
    if (r.retval !== XdpAction.DROP) t.fail(`frame not held: verdict ${r.retval}`);
  }
  t.equal(lines.length, 0, 'nothing delivered while holding');

  const r = await agent.program('agent_replay').runAsync({ data: TEMPLATE, liveFrames: true, repeat: K, netns: nsA, context: xdpMd({ dataLen: TEMPLATE.length, ingressIfindex: ifA }) });
  t.equal(r.retval, 0, 'live mode reports no verdict');
  const code = await exited;
  t.equal(code, 0, `the receiver got ${K} datagrams (${lines.length})`);
  t.same(
    lines.map((l) => l.replace(/\.+$/, '')),
    frames.map((_, i) => `seq-${i + 1}`),
    'every datagram once, in ring order',
  );
  const ho = sharpAgentHoCodec.decode(agent.map('handovers').lookup(u32.encode(HID))!);
  t.same([ho.head[0], ho.tail[0], ho.released[0], ho.replay_failed[0]], [K, K, BigInt(K), 0n], 'the ring is empty, every frame released');
  const st = sumPerCpu(agent.map('agent_stats').typed(u32, sharpAgentStatsCodec).getPerCpu(0));
  t.same([st.replayed, st.to_stack], [BigInt(K), BigInt(K)], 'every frame replayed to the stack');
});
