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
  /**
   * Size of the switch's rule tables (rules_exact, rule_actions, rule_stats):
   * rule ids 1..maxRules-1 (default SHARP_DEFAULT_MAX_RULES, at most
   * SHARP_MAX_RULES_LIMIT); fixed at load
   */
  maxRules?: number;
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
  /** flow records an XDP VNF's flow_state map holds (default SHARP_DEFAULT_VNF_FLOWS, at most VNF_FLOWS_LIMIT); fixed at load */
  vnfFlows?: number;
}

/** The most rules one XDP switch's tables are sized for (rule_stats is a per-CPU array indexed by rule id). */
export const SHARP_MAX_RULES_LIMIT = 1 << 20;
/** The most flow records an XDP VNF's flow_state map is sized for. */
export const VNF_FLOWS_LIMIT = 1 << 22;

/** A table size from the topology: an integer in min..max, or a TopologyLimitError naming the field. */
export function tableSize(field: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) throw new TopologyLimitError(field, value, min, max);
  return value;
}

export class TopologyLimitError extends RangeError {
  override name = 'TopologyLimitError';
  constructor(
    readonly field: string,
    readonly value: number,
    readonly min: number,
    readonly max: number,
  ) {
    super(`${field} must be an integer in ${min}..${max}, got ${value}`);
  }
}

export interface XdpTopology {
  switches: XdpSwitch[];
  instances: XdpInstance[];
}
