/**
 * Ctrl-C and closed output, the same for every command.
 *
 * The first SIGINT aborts `interruption` (every request to the lab daemon and
 * every wait of a command listens to it) and says so on stderr; the command
 * ends with exit 130. A command that must tidy up first (demo, lab up, bench)
 * runs inside `tidying(what, …)`, and the message says what it does; a
 * second Ctrl-C quits at once. Output into a closed pipe (EPIPE, as after
 * `| head`) mutes stdout and stderr and ends a running command the same way,
 * without a word.
 */
import { EXIT, InterruptedError } from './errors.js';

export type InterruptCause = 'sigint' | 'broken-pipe';

const controller = new AbortController();
/** aborted (with an InterruptedError as reason) on Ctrl-C or a closed output */
export const interruption: AbortSignal = controller.signal;

let cause: InterruptCause | undefined;
let sigints = 0;
let tidy: string | undefined;
/** a command that has not ended this long after an interruption is stuck: exit */
const STUCK_MS = 150;

export function interruptCause(): InterruptCause | undefined {
  return cause;
}

function interrupt(c: InterruptCause): void {
  cause ??= c;
  if (!controller.signal.aborted) controller.abort(new InterruptedError(c === 'sigint' ? 'interrupted (Ctrl-C)' : 'interrupted: the output was closed'));
  if (tidy === undefined) setTimeout(() => process.exit(EXIT.INTERRUPTED), STUCK_MS).unref();
}

function mute(stream: NodeJS.WriteStream): void {
  stream.write = ((_chunk: unknown, enc?: unknown, cb?: unknown): boolean => {
    const done = typeof enc === 'function' ? enc : cb;
    if (typeof done === 'function') (done as () => void)();
    return true;
  }) as typeof stream.write;
}

let installed = false;
export function installInterruptHandling(): void {
  if (installed) return;
  installed = true;
  process.on('SIGINT', () => {
    if (++sigints > 1) process.exit(EXIT.INTERRUPTED);
    cause = 'sigint';
    // a command that ends at once says so itself ("sharpctl: interrupted …")
    process.stderr.write(tidy === undefined ? '\n' : `\ninterrupted: ${tidy} (Ctrl-C again to quit at once)\n`);
    interrupt('sigint');
  });
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
      mute(process.stdout);
      mute(process.stderr);
      interrupt('broken-pipe');
    });
  }
}

/** Runs `fn`; an interruption meanwhile lets it finish (it watches `interruption`), saying `what` it does. */
export async function tidying<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const before = tidy;
  tidy = what;
  try {
    return await fn();
  } finally {
    tidy = before;
  }
}

/** A wait that ends early, rejecting with the InterruptedError, on an interruption. */
export function sleep(ms: number, signal: AbortSignal = interruption): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
