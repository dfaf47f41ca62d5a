/**
 * The VNF kinds a node can put behind an agent: one entry each. Config
 * validation takes its choices from here.
 */
export interface VnfKind {
  /** what it is, for --help and errors */
  description: string;
  /** the compiled XDP object and its program, tail-called behind the agent */
  object: string;
  program: string;
}

export const VNF_KINDS = {
  counter: { description: 'the example XDP VNF: a per-flow packet counter stamped on every probe', object: 'vnf_counter.bpf.o', program: 'vnf_counter' },
} as const satisfies Record<string, VnfKind>;

export type VnfKindName = keyof typeof VNF_KINDS;
