/**
 * The VNF kinds a node can put behind an agent: one entry each. Config
 * validation (node configs, lab specs) takes its choices from here.
 *
 * Two ways for a VNF to sit behind the agent:
 *   - `xdp`: an XDP program, tail-called by the agent (vnf_chain): live and
 *     replayed frames both run through it;
 *   - `stack`: the host's own network stack (routing, nftables, conntrack,
 *     a userspace process): the agent still strips, counts and holds, but
 *     hands every other frame to the stack (XDP_PASS, re-addressed to the
 *     interface's MAC), and a release replays the held frames into the
 *     stack in order (live frames, XDP_PASS). Its output leaves by routing
 *     through the instance's other interface. A stack kind with a
 *     `userspace` process has the stack route what it receives into a TUN
 *     device read by that process (one per instance), which writes every
 *     packet back for the stack to forward.
 */
export interface XdpVnfKind {
  /** what it is, for --help and errors */
  description: string;
  datapath: 'xdp';
  /** the compiled XDP object and its program, tail-called behind the agent */
  object: string;
  program: string;
  /** whether the VNF stamps its per-flow counter into probes (the sink checks stamp == seq only then) */
  stamps: boolean;
}

export interface StackVnfKind {
  description: string;
  datapath: 'stack';
  /** the stack itself never stamps probes; a userspace process may */
  stamps: boolean;
  /** the userspace VNF process the stack feeds through a TUN device (its folder: src/vnf/<name>/), started and stopped with the lab */
  userspace?: 'userspace';
  /** where its per-flow state is, which the instance's host exports and imports: the namespace's connection tracking table */
  state: 'conntrack';
}

export type VnfKind = XdpVnfKind | StackVnfKind;

export const VNF_KINDS = {
  counter: { description: 'the example XDP VNF: a per-flow packet counter stamped on every probe', datapath: 'xdp', object: 'vnf_counter.bpf.o', program: 'vnf_counter', stamps: true },
  linux: { description: "the host's own stack behind the agent: IP forwarding between the two interfaces, nftables (e.g. a NAT), conntrack, userspace", datapath: 'stack', stamps: false, state: 'conntrack' },
  userspace: {
    description: 'the TypeScript per-flow counter on E-State (UserspaceVnf) in a process per instance, fed by a TUN device of the instance\'s stack; stamps probes; its state moves with the E-State manager of src/vnf/userspace',
    datapath: 'stack',
    stamps: true,
    // the stack in front of the TUN is still a Linux stack: what the host exports of it is its conntrack table; the process's state is in E-State
    state: 'conntrack',
    userspace: 'userspace',
  },
} as const satisfies Record<string, VnfKind>;

export type VnfKindName = keyof typeof VNF_KINDS;

export const VNF_KIND_NAMES = Object.keys(VNF_KINDS) as VnfKindName[];

/** The default kind (what an instance without one runs). */
export const DEFAULT_VNF_KIND: VnfKindName = 'counter';

export function isVnfKind(s: string): s is VnfKindName {
  return Object.hasOwn(VNF_KINDS, s);
}

export function vnfKind(name: VnfKindName | undefined): VnfKind {
  return VNF_KINDS[name ?? DEFAULT_VNF_KIND];
}

/** The userspace VNF process a kind's instances run (src/vnf/<name>/), if any. */
export function userspaceProcess(name: VnfKindName | undefined): StackVnfKind['userspace'] {
  const k = vnfKind(name);
  return k.datapath === 'stack' && 'userspace' in k ? k.userspace : undefined;
}

/**
 * The name of the state backend a node's ExportState/ImportState/DeleteState
 * of an instance of this kind read and write (the `backend` label of
 * sharp_node_state_duration_seconds): an XDP VNF's own per-flow map
 * (vnf-map), or what the kind says a stack VNF's host exports (conntrack).
 */
export function nodeStateBackend(name: VnfKindName | undefined): 'vnf-map' | StackVnfKind['state'] {
  const k = vnfKind(name);
  return k.datapath === 'xdp' ? 'vnf-map' : k.state;
}
