/** The experiments' names, apart from their code: the CLI's help lists them without loading any of it. */
export type ExperimentName = 'buffer' | 'rate' | 'duration' | 'forwarding' | 'wildcard' | 'soak' | 'manyflows';
export const EXPERIMENTS: readonly ExperimentName[] = ['buffer', 'rate', 'duration', 'forwarding', 'wildcard', 'soak', 'manyflows'];
