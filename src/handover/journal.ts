/**
 * The controller's handover journal: what a handover in flight is (id,
 * rules, from, to, ring, mode) and how far it got, written before each step
 * acts, so that a controller restarted after a crash can finish or roll back
 * every handover the dead one left (HandoverEngine.recover). The data plane
 * (rule actions, armed agents) is read back from the nodes; the journal only
 * says what the nodes cannot: which handover a rule belonged to, and whether
 * the state move had finished (committed).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { HandoverMode, HandoverStep } from './run.js';

export interface JournalEntry {
  version: 1;
  id: number;
  mode: HandoverMode;
  rules: number[];
  from: string;
  to: string;
  /** B's hold ring */
  ring: number;
  /** the step entered last (its operations may or may not have run) */
  step: HandoverStep;
  /** set before the switch-over writes */
  switchedOver: boolean;
  /** set when B's release began: only forward from here */
  committed: boolean;
  /** the request's stateBackend (e.g. 'redis'): the recovering controller moves or rolls back state with that backend's mover */
  stateBackend?: string;
  /** a rollback after switch-over had begun: A's second handover id and ring */
  back?: { id: number; ring: number };
  startedAt: number;
}

export interface HandoverJournal {
  write(e: JournalEntry): void;
  remove(id: number): void;
  entries(): JournalEntry[];
}

export class JournalError extends Error {
  override name = 'JournalError';
}

/** In memory: for tests, and for a controller that accepts losing track on a crash. */
export class MemoryJournal implements HandoverJournal {
  readonly #m = new Map<number, JournalEntry>();
  write(e: JournalEntry): void {
    this.#m.set(e.id, structuredClone(e));
  }
  remove(id: number): void {
    this.#m.delete(id);
  }
  entries(): JournalEntry[] {
    return [...this.#m.values()].map((e) => structuredClone(e));
  }
}

/** One file per handover in a folder, replaced atomically (write, fsync, rename). */
export class FileJournal implements HandoverJournal {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  #file(id: number): string {
    return path.join(this.dir, `handover-${id}.json`);
  }

  write(e: JournalEntry): void {
    const file = this.#file(e.id);
    const tmp = `${file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(e));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  }

  remove(id: number): void {
    rmSync(this.#file(id), { force: true });
  }

  entries(): JournalEntry[] {
    return readdirSync(this.dir)
      .filter((f) => /^handover-\d+\.json$/.test(f))
      .map((f) => {
        const file = path.join(this.dir, f);
        let e: JournalEntry;
        try {
          e = JSON.parse(readFileSync(file, 'utf8')) as JournalEntry;
        } catch (err) {
          throw new JournalError(`${file}: not a journal entry (${err instanceof Error ? err.message : String(err)})`, { cause: err });
        }
        if (e.version !== 1 || !Number.isInteger(e.id) || !Array.isArray(e.rules)) throw new JournalError(`${file}: not a version 1 journal entry`);
        return e;
      })
      .sort((a, b) => a.startedAt - b.startedAt);
  }
}
