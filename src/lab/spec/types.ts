/**
 * The lab spec: what a user writes (`LabSpecInput`, matching
 * lab-spec.schema.json) and what `validateSpec` hands back (`LabSpec`: the
 * same document with every default filled in and every shorthand expanded).
 *
 * A `LabSpec` is itself a valid input: validating it again yields an equal
 * spec.
 */
import { printable } from './util.js';

import { SHARP_DEFAULT_MAX_PORTS, SHARP_DEFAULT_MAX_RULES, SHARP_MAX_WILD_RULES } from '../../generated/abi.js';
import type { VnfKindName } from '../../node/vnf-kinds.js';

export type Target = 'xdp' | 'bmv2';
export type StateBackend = 'vnf-map' | 'copy' | 'estate' | 'redis' | 'conntrack';
/** the VNF kinds of src/node/vnf-kinds.ts (the schema's enum is checked against it in test/lab/vnf-kinds.test.ts) */
export type VnfType = VnfKindName;
export type ProtoName = 'udp' | 'tcp' | 'icmp';

export const TARGETS: readonly Target[] = ['xdp', 'bmv2'];
export const STATE_BACKENDS: readonly StateBackend[] = ['vnf-map', 'copy', 'estate', 'redis', 'conntrack'];
export const PROTO_NUMBERS: Readonly<Record<ProtoName, number>> = { icmp: 1, tcp: 6, udp: 17 };

export const DEFAULTS = {
  target: 'xdp' as Target,
  state: 'vnf-map' as StateBackend,
  vnfType: 'counter' as VnfType,
  ringCapacity: 4096,
  ringCount: 4,
  mtu: 1500,
  priority: 0,
} as const;

export const LIMITS = {
  // 2^18: 262144 slots of 1544 bytes are 405 MB per side, 810 MB per ring (its two sides)
  ringCapacity: { min: 64, max: 262144 },
  ringCount: { min: 1, max: 16 },
  mtu: { min: 576, max: 9000 },
  /** SHARP_MAX_WILD_RULES: wildcard rules one switch holds (XDP's rules_wild, P4's ternary table) */
  xdpWildcardRules: SHARP_MAX_WILD_RULES,
  /** SHARP_DEFAULT_MAX_PORTS: ports of one switch (tx_ports, port_stats; the P4 port tables) */
  switchPorts: SHARP_DEFAULT_MAX_PORTS,
  /** rule ids 1..SHARP_DEFAULT_MAX_RULES-1, one id space for all the lab's switches (id 0 is no rule) */
  rules: SHARP_DEFAULT_MAX_RULES - 1,
} as const;

// ------------------------------------------------------------ validated spec

export interface HostSpec {
  name: string;
  /** address with prefix length, e.g. "10.0.0.1/24" */
  ip: string;
  /** lowercase; derived from the IP ("02:00:" + its four bytes) when not written */
  mac: string;
}

export interface SwitchSpec {
  name: string;
  /** XDP: the size of the switch's rule tables, rule ids 1..maxRules-1 (default SHARP_DEFAULT_MAX_RULES) */
  maxRules?: number;
}

export interface VnfSpec {
  name: string;
  type: VnfType;
  /** frames per hold ring and side; a power of two in 64..262144 (1544 bytes each) */
  ringCapacity: number;
  /** hold rings (concurrent incoming handovers), 1..16 */
  ringCount: number;
  /** XDP VNFs: flow records its flow_state map holds (default SHARP_DEFAULT_VNF_FLOWS) */
  vnfFlows?: number;
  /** type linux only: the instance is a stateful NAT (see NatSpec) */
  nat?: NatSpec;
}

/**
 * A `linux` instance as a stateful NAT (nftables in its namespace): traffic
 * from its side 0 (inside, towards the ingress switch) leaving by side 1 is
 * source-NATed to `outside`; replies come back through conntrack; packets
 * of connections it has no entry for are dropped (invalid, or new from the
 * outside). Every instance with the same `outside` shares it: hosts on the
 * outside see one peer, and the egress switch's rules send replies to
 * `outside` to the instance that owns the flow.
 */
export interface NatSpec {
  /** IPv4 address the inside is translated to */
  outside: string;
}

export interface LinkSpec {
  /** For a VNF, its first listed link goes to its side 0 (ingress) switch, the second to side 1. */
  ends: [string, string];
  mtu: number;
}

/** Fields left out match anything. */
export interface WildcardMatchSpec {
  /** CIDR; a bare address in the input becomes /32 */
  src?: string;
  dst?: string;
  /** 0 = any */
  sport?: number;
  dport?: number;
  /** IP protocol number; 0 = any */
  proto?: number;
  /** neighbour node the packet came from (ingress port) */
  from?: string;
}

export interface FlowSpec {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** IP protocol number */
  proto: number;
}

export interface WildcardRuleSpec {
  name?: string;
  switch: string;
  match: WildcardMatchSpec;
  /** neighbour node the packet goes to (egress port) */
  to: string;
  priority: number;
}

export interface ExactRuleSpec {
  name?: string;
  switch: string;
  flow: FlowSpec;
  to: string;
}

export type RuleSpec = WildcardRuleSpec | ExactRuleSpec;

/**
 * The Redis of `state: redis`: one server (url), an existing Redis Cluster
 * (cluster: some of its nodes), or a private cluster the lab starts
 * (cluster: { masters, replicas }). Without it: a private redis-server.
 */
export interface RedisSpec {
  url?: string;
  cluster?: string[] | { masters?: number; replicas?: number };
  keyPrefix?: string;
  timeoutMs?: number;
  failoverMs?: number;
}

export interface LabSpec {
  name: string;
  description?: string;
  target: Target;
  state: StateBackend;
  /** only when the input had it */
  redis?: RedisSpec;
  hosts: HostSpec[];
  switches: SwitchSpec[];
  vnfs: VnfSpec[];
  links: LinkSpec[];
  rules: RuleSpec[];
}

export function isExactRule(r: RuleSpec): r is ExactRuleSpec {
  return 'flow' in r;
}

// ------------------------------------------------------------ what users write

export type ProtoInput = ProtoName | number;

export interface HostInput {
  name: string;
  ip: string;
  mac?: string;
}

export interface VnfInput {
  name: string;
  type?: VnfType;
  nat?: NatSpec;
  ringCapacity?: number;
  ringCount?: number;
  vnfFlows?: number;
}

/** `[a, b]` or `{ ends: [a, b], mtu }` */
export type LinkInput = [string, string] | { ends: [string, string]; mtu?: number };

export interface WildcardMatchInput {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  proto?: ProtoInput;
  from?: string;
}

export interface FlowInput {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: ProtoInput;
}

export type RuleInput =
  | { name?: string; switch: string; match: WildcardMatchInput; to: string; priority?: number }
  | { name?: string; switch: string; flow: FlowInput; to: string };

export interface LabSpecInput {
  $schema?: string;
  name: string;
  description?: string;
  target?: Target;
  state?: StateBackend;
  redis?: RedisSpec;
  hosts: HostInput[];
  switches: SwitchSpec[];
  vnfs?: VnfInput[];
  links: LinkInput[];
  rules?: RuleInput[];
}

// ------------------------------------------------------------ errors

/** One problem in a spec. */
export interface SpecIssue {
  /** where: a dotted path like `rules[2].to`; "" for the document itself */
  path: string;
  /** what is wrong, in words */
  message: string;
  /** 1-based position in the source text, when known (loadSpec) */
  line?: number;
  column?: number;
}

function issueLine(i: SpecIssue): string {
  const where = i.path === '' ? 'spec' : i.path;
  const pos = i.line === undefined ? '' : ` (line ${i.line}${i.column === undefined ? '' : `, column ${i.column}`})`;
  // messages quote the spec's text: never print its raw bytes
  return printable(`${where}${pos}: ${i.message}`);
}

export class SpecError extends Error {
  override name = 'SpecError';
  readonly errors: SpecIssue[];
  constructor(errors: SpecIssue[], options?: ErrorOptions & { source?: string }) {
    const head = `${options?.source ? `${printable(options.source)}: ` : ''}lab spec: ${errors.length} ${errors.length === 1 ? 'problem' : 'problems'}`;
    super([head, ...errors.map((e) => `  ${issueLine(e)}`)].join('\n'), options);
    this.errors = errors;
  }
}

export { issueLine as formatIssue };
