/** A switch object loaded for capture tests: two ports, two exact rules, driven by BPF_PROG_TEST_RUN. */
import type { Test } from 'tap';
import { BpfObjectSpec, u32, withNetns, xdpMd, MapUpdate, type BpfCollection } from '../../src/bpf/index.js';
import { sharpPortInfoCodec, sharpExactRuleCodec, sharpRuleActionCodec, sharpFlowKeyCodec, SHARP_PORT_HOST, SHARP_PORT_VNF, SHARP_PHASE_NONE, SHARP_PHASE_PRE, SHARP_DEFAULT_MAX_IFINDEX } from '../../src/generated/abi.js';
import { ipv4Number, IPPROTO_UDP } from '../../src/net/frame.js';
import type { CaptureTarget } from '../../src/capture/tap.js';
import { programObject } from './env.js';
import { testPorts, FLOW, type FlowAddr } from './programs.js';

export const CAPTURE_PORTS = [
  { name: 'sw-client', ifname: 'p0', role: SHARP_PORT_HOST },
  { name: 'sw-vnf1', ifname: 'p1', role: SHARP_PORT_VNF },
];
/** FLOW (rule 1) goes to sw-vnf1 marked PRE for handover 7; OTHER (rule 2) goes there unmarked */
export const OTHER: FlowAddr = { ...FLOW, srcPort: FLOW.srcPort + 1 };

export function loadCaptureSwitch(t: Test, ringBytes?: number): { coll: BpfCollection; target: CaptureTarget; run: (frame: Buffer, port?: string, repeat?: number) => { retval: number; out: Buffer } } {
  const ports = testPorts(t, 'cap', CAPTURE_PORTS.map((p) => p.ifname));
  const spec = BpfObjectSpec.open(programObject('switch'));
  spec.setMaxEntries('ports', Math.max(SHARP_DEFAULT_MAX_IFINDEX, ...Object.values(ports.ifindex).map((i) => i + 1)));
  if (ringBytes !== undefined) spec.setMaxEntries('capture_ring', ringBytes);
  const coll = spec.load();
  t.teardown(() => coll.close());
  CAPTURE_PORTS.forEach((p, slot) => coll.map('ports').update(u32.encode(ports.ifindex[p.ifname]!), sharpPortInfoCodec.encode({ slot, role: p.role })));
  withNetns(ports.netns, () => CAPTURE_PORTS.forEach((p, slot) => coll.map('tx_ports').update(u32.encode(slot), u32.encode(ports.ifindex[p.ifname]!))));
  const rule = (f: FlowAddr, id: number, phase: number): void =>
    coll.map('rules_exact').update(
      sharpFlowKeyCodec.encode({ saddr: ipv4Number(f.srcIp), daddr: ipv4Number(f.dstIp), sport: f.srcPort, dport: f.dstPort, proto: IPPROTO_UDP, pad: Buffer.alloc(3) }),
      sharpExactRuleCodec.encode({ rule_id: id, action: sharpRuleActionCodec.encode({ out_slot: 1, hid: phase ? 7 : 0, phase, flags: 0 }) }),
      MapUpdate.NOEXIST,
    );
  rule(FLOW, 1, SHARP_PHASE_PRE);
  rule(OTHER, 2, SHARP_PHASE_NONE);
  const target: CaptureTarget = { program: 'switch', object: 'sw', coll, ports: CAPTURE_PORTS.map((p, slot) => ({ name: p.name, ifindex: ports.ifindex[p.ifname]!, slot })) };
  const prog = coll.program('sharp_switch');
  const run = (frame: Buffer, port = 'p0', repeat?: number): { retval: number; out: Buffer } => {
    const r = prog.run({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ports.ifindex[port]! }), netns: ports.netns, ...(repeat === undefined ? {} : { repeat }) });
    return { retval: r.retval, out: Buffer.from(r.dataOut!) };
  };
  return { coll, target, run };
}

