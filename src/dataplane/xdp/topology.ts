/** What the XDP data plane needs to know about the lab it drives. */
import type { VnfKindName } from '../../node/vnf-kinds.js';

export interface XdpSwitchPort {
  /** port name, unique per data plane (e.g. "s1-vnf1") */
  name: string;
  /** interface name inside the switch's namespace */
  ifname: string;
  role: 'host' | 'vnf';
  /** for role 'vnf': the instance behind the port */
  instance?: string;
  /** for role 'vnf': the instance's side this port is cabled to (0 = its ingress side) */
  instanceSide?: number;
}

export interface XdpSwitch {
  name: string;
  /** the namespace the interfaces are in; absent: this process's own (a node daemon on its host) */
  netns?: string;
  ports: XdpSwitchPort[];
}

export interface XdpInstance {
  name: string;
  /** the namespace the interfaces are in; absent: this process's own (a node daemon on its host) */
  netns?: string;
  /** [side 0, side 1]: side 0 faces the ingress switch, side 1 the egress switch */
  ifaces: [string, string];
  /** frames per ring (per side); a power of two */
  ringCapacity: number;
  /** concurrent incoming handovers */
  ringCount: number;
  /** the VNF behind the agent (src/node/vnf-kinds.ts); absent: 'counter' */
  kind?: VnfKindName;
}

export interface XdpTopology {
  switches: XdpSwitch[];
  instances: XdpInstance[];
}
