/** What the BMv2 data plane needs to know about the lab it drives. */
import type { XdpInstance, XdpSwitchPort } from '../xdp/topology.js';

export interface Bmv2SwitchPort extends XdpSwitchPort {
  /** the BMv2 port number of the interface (`-i N@ifname`) */
  bmv2Port: number;
}

export interface Bmv2Switch {
  name: string;
  /** the namespace of the switch's interfaces */
  netns: string;
  /** P4Runtime gRPC target, e.g. "unix:/run/sharpctl/lab/s1.grpc" */
  grpcAddress: string;
  deviceId: number;
  ports: Bmv2SwitchPort[];
}

export interface Bmv2Topology {
  switches: Bmv2Switch[];
  /** VNF instances: their agents are XDP, as in the XDP data plane */
  instances: XdpInstance[];
}

/** simple_switch_grpc is started with --cpu-port 255 (CPU_PORT of p4/sharp.p4). */
export const BMV2_CPU_PORT = 255;
