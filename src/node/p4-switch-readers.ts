/**
 * What a node reads of the P4 switches on its host (its config's
 * p4Switches): their ports' receive counts and, for a switch whose BMv2 pid
 * file is given, what each port's input ring dropped (BMv2's packet sockets,
 * adopted). BMv2 restarting gives it a new pid: the pid file is read again on
 * every read of the drops, and a new pid's sockets adopted then. Between a
 * restart and a pid file naming a live process, the drops are not known.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { SwitchPortArrivals } from '../dataplane/bmv2/port-arrivals.js';

export class PidFileError extends Error {
  override name = 'PidFileError';
}

/** The pid in a pid file (its first line, a positive integer). */
export function readPidFile(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new PidFileError(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  const first = text.split('\n', 1)[0]!.trim();
  const pid = Number(first);
  if (!/^[0-9]{1,10}$/.test(first) || !(pid > 0 && pid <= 2 ** 22)) throw new PidFileError(`${file} holds no pid (its first line: '${first.slice(0, 40)}')`);
  return pid;
}

export class P4SwitchReaders {
  readonly #arrivals: SwitchPortArrivals;
  /** switch name -> its pid file and the pid whose sockets are adopted (undefined: none now) */
  readonly #processes: Map<string, { pidFile: string; pid: number | undefined }>;
  readonly #log: (line: string) => void;

  constructor(arrivals: SwitchPortArrivals, processes: Map<string, { pidFile: string; pid: number | undefined }>, log: (line: string) => void) {
    this.#arrivals = arrivals;
    this.#processes = processes;
    this.#log = log;
  }

  switches(): string[] {
    return this.#arrivals.switches();
  }

  read(name: string): Map<string, bigint> {
    return this.#arrivals.read(name);
  }

  /** Switch `name`'s ports' input-ring drops since its BMv2 was adopted; undefined where its pid is not given or its process not adopted now. */
  dropped(name: string): Map<string, bigint> | undefined {
    const p = this.#processes.get(name);
    if (p === undefined) return this.#arrivals.dropped(name);
    let pid: number | undefined;
    try {
      pid = readPidFile(p.pidFile);
    } catch {
      pid = undefined; // between BMv2's exit and its restart's pid file
    }
    if (pid !== undefined && !existsSync(`/proc/${pid}`)) pid = undefined;
    if (pid !== p.pid) {
      const was = p.pid;
      p.pid = undefined;
      try {
        // also with no process: a dead BMv2's sockets, kept bound by our copies, would count every frame as dropped
        this.#arrivals.readopt(name, pid);
        if (pid === undefined) throw new PidFileError(`${p.pidFile} names no running process`);
        p.pid = pid;
        this.#log(`P4 switch ${name}: BMv2 is process ${pid} now (${p.pidFile}): its input drops counted from here`);
      } catch (e) {
        if (was !== undefined) this.#log(`P4 switch ${name}: its input drops are not known: ${(e as Error).message}`);
      }
    }
    return p.pid === undefined ? undefined : this.#arrivals.dropped(name);
  }

  close(): void {
    this.#arrivals.close();
  }
}
