/** The capture targets of an XDP data plane: each switch's object with its ports by slot, each agent's with its interfaces. */
import { ifindexOf } from '../bpf/index.js';
import type { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import type { XdpTopology } from '../dataplane/xdp/topology.js';
import type { CaptureTarget } from './tap.js';

export function xdpCaptureTargets(dp: XdpDataPlane, topology: XdpTopology): CaptureTarget[] {
  return [
    // slots are port order, as the data plane assigns them
    ...topology.switches.map((s): CaptureTarget => ({ program: 'switch', object: s.name, coll: dp.switchObject(s.name), ports: s.ports.map((p, slot) => ({ name: p.name, ifindex: ifindexOf(p.ifname, s.netns), slot })) })),
    ...topology.instances.map((i): CaptureTarget => ({ program: 'agent', object: i.name, coll: dp.agents().agentObject(i.name), ports: i.ifaces.map((ifname) => ({ name: ifname, ifindex: ifindexOf(ifname, i.netns) })) })),
  ];
}
