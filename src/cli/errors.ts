/**
 * sharpctl's exit codes and the errors that carry them. Errors from the
 * library (specs, compiles, BMv2, the lab daemon) keep their own classes;
 * `exitCodeOf` maps them by name.
 */
/** 130 and 143: 128 + SIGINT, 128 + SIGTERM, as a shell reports a command those signals ended */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, ENVIRONMENT: 3, INTERRUPTED: 130, TERMINATED: 143 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error that says how sharpctl exits. */
export abstract class CliError extends Error {
  abstract readonly exitCode: ExitCode;
}

/** Bad usage or input (exit 2). */
export class UsageError extends CliError {
  override name = 'UsageError';
  readonly exitCode = EXIT.USAGE;
}

/** The machine cannot run it: not root, a tool or kernel feature missing (exit 3). */
export class EnvironmentError extends CliError {
  override name = 'EnvironmentError';
  readonly exitCode = EXIT.ENVIRONMENT;
}

/** The operation ran and failed: the lab is not up, the daemon went away (exit 1). */
export class LabError extends CliError {
  override name = 'LabError';
  readonly exitCode = EXIT.FAILED;
}

/** Ctrl-C, or the reader of the output went away (exit 130). */
export class InterruptedError extends CliError {
  override name = 'InterruptedError';
  readonly exitCode = EXIT.INTERRUPTED;
}

export function exitCodeOf(err: Error): ExitCode {
  if (err instanceof CliError) return err.exitCode;
  // errors from other modules (by name: importing their classes would load them, and what they load, at every start), or sent back by the lab daemon
  switch (err.name) {
    case 'UsageError':
    case 'SpecError':
    case 'DemoError':
    case 'NodeConfigError':
    case 'DeploySpecError':
    // a --metrics-textfile that is not one (checked before anything is done)
    case 'ExpositionParseError':
    case 'TextfileMergeError':
      return EXIT.USAGE;
    case 'EnvironmentError':
    case 'CompileError':
      return EXIT.ENVIRONMENT;
    case 'InterruptedError':
      return EXIT.INTERRUPTED;
    default:
      return EXIT.FAILED;
  }
}

/** Exit 3 unless running as root. */
export function requireRoot(what: string, why = 'it creates network namespaces and loads programs into the kernel'): void {
  if (process.getuid?.() !== 0) throw new EnvironmentError(`${what} needs root: ${why} (run it as root, e.g. with sudo)`);
}
