/** What the BMv2 data plane needs to know about the lab it drives, and what a controller needs to know about a P4Runtime switch. */
import type { XdpInstance, XdpSwitchPort } from '../xdp/topology.js';

/** A port of a switch driven over P4Runtime: its name, what it faces, its BMv2 port number. */
export interface P4RuntimeSwitchPort {
  name: string;
  role: 'host' | 'vnf';
  /** for role 'vnf': the instance behind the port and its side (0 = its ingress side) */
  instance?: string;
  instanceSide?: number;
  bmv2Port: number;
}

/**
 * How a controller takes a P4Runtime switch over: `push` installs
 * p4/sharp.p4 (SetForwardingPipelineConfig: the switch's tables start
 * empty); `existing` requires the switch to run it already (same P4Info, and
 * our cookie when it has one) and keeps its tables: port tables are
 * completed, rules found there are adopted.
 */
export type PipelineMode = 'push' | 'existing';

export interface P4RuntimeSwitch {
  name: string;
  /** P4Runtime gRPC target: "host:port" or "unix:/path" (plaintext gRPC) */
  grpcAddress: string;
  deviceId: number;
  ports: P4RuntimeSwitchPort[];
}

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
  /** the simple_switch_grpc process, where known (the lab that started it): its packet sockets say what its input rings dropped */
  pid?: number;
}

export interface Bmv2Topology {
  switches: Bmv2Switch[];
  /** VNF instances: their agents are XDP, as in the XDP data plane */
  instances: XdpInstance[];
}

/** simple_switch_grpc is started with --cpu-port 255 (CPU_PORT of p4/sharp.p4). */
export const BMV2_CPU_PORT = 255;
