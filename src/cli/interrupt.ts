/**
 * Ctrl-C and closed output, the same for every command.
 *
 * The first SIGINT aborts `interruption` (every request to the lab daemon and
 * every wait of a command listens to it) and says so on stderr; the command
 * ends with exit 130. SIGTERM (`kill`, systemd, a supervisor) does the same,
 * tidying included, and ends with exit 143. A command that must tidy up first (demo, lab up, bench)
 * runs inside `tidying(what, …)`, and the message says what it does; a
 * second Ctrl-C quits at once. Output into a closed pipe (EPIPE, as after
 * `| head`) mutes stdout and stderr and ends a running command the same way,
 * without a word.
 */
import { EXIT, InterruptedError, type ExitCode } from './errors.js';

export type InterruptCause = 'sigint' | 'sigterm' | 'broken-pipe';

const controller = new AbortController();
/** aborted (with an InterruptedError as reason) on Ctrl-C or a closed output */
export const interruption: AbortSignal = controller.signal;

let cause: InterruptCause | undefined;
let signals = 0;
let tidy: string | undefined;
/** a command that has not ended this long after an interruption is stuck: exit */
const STUCK_MS = 150;

export function interruptCause(): InterruptCause | undefined {
  return cause;
}

/** How a command a signal ended exits (130 for SIGINT, 143 for SIGTERM); undefined when none did. */
export function interruptExitCode(): ExitCode | undefined {
  return cause === 'sigint' ? EXIT.INTERRUPTED : cause === 'sigterm' ? EXIT.TERMINATED : undefined;
}

const MESSAGES: Record<InterruptCause, string> = {
  sigint: 'interrupted (Ctrl-C)',
  sigterm: 'terminated (SIGTERM)',
  'broken-pipe': 'interrupted: the output was closed',
};

function interrupt(c: InterruptCause): void {
  cause ??= c;
  if (!controller.signal.aborted) controller.abort(new InterruptedError(MESSAGES[c]));
  if (tidy === undefined) setTimeout(() => process.exit(interruptExitCode() ?? EXIT.INTERRUPTED), STUCK_MS).unref();
}

function mute(stream: NodeJS.WriteStream): void {
  stream.write = ((_chunk: unknown, enc?: unknown, cb?: unknown): boolean => {
    const done = typeof enc === 'function' ? enc : cb;
    if (typeof done === 'function') (done as () => void)();
    return true;
  }) as typeof stream.write;
}

let signalsOwned = false;
/**
 * For a command that stops on SIGINT/SIGTERM by itself as its normal end (a
 * daemon: `node run`): from now on those signals are its own, and neither
 * abort `interruption` nor set the exit code.
 */
export function ownSignals(): void {
  signalsOwned = true;
}

let installed = false;
export function installInterruptHandling(): void {
  if (installed) return;
  installed = true;
  const onSignal = (c: 'sigint' | 'sigterm'): void => {
    if (signalsOwned) return;
    if (++signals > 1) process.exit(interruptExitCode() ?? EXIT.INTERRUPTED);
    cause = c;
    // a command that ends at once says so itself ("sharpctl: interrupted …")
    const again = c === 'sigint' ? 'Ctrl-C again' : 'another signal';
    process.stderr.write(tidy === undefined ? '\n' : `\n${c === 'sigint' ? 'interrupted' : 'terminated'}: ${tidy} (${again} to quit at once)\n`);
    interrupt(c);
  };
  process.on('SIGINT', () => onSignal('sigint'));
  process.on('SIGTERM', () => onSignal('sigterm'));
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
