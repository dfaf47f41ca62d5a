/**
 * The run directory (/run/sharpctl/<lab>/): which lab is up, its daemon, its
 * socket. Separate CLI invocations find each other's labs here.
 */
import { readFileSync, writeFileSync, readdirSync, existsSync, renameSync } from 'node:fs';
import path from 'node:path';

export interface LabState {
  name: string;
  pid: number;
  prefix: string;
  status: 'starting' | 'ready' | 'failed';
  error?: string;
  startedAt: string;
  socket: string;
  namespaces: string[];
  target: 'xdp' | 'bmv2';
}

export interface LabPaths {
  dir: string;
  state: string;
  socket: string;
  log: string;
}

export function labPaths(runDir: string, name: string): LabPaths {
  const dir = path.join(runDir, name);
  return { dir, state: path.join(dir, 'state.json'), socket: path.join(dir, 'ctl.sock'), log: path.join(dir, 'daemon.log') };
}

export function writeState(p: LabPaths, s: LabState): void {
  // write-then-rename: a reader never sees half a file
  writeFileSync(`${p.state}.tmp`, JSON.stringify(s, null, 2) + '\n');
  renameSync(`${p.state}.tmp`, p.state);
}

export function readState(p: LabPaths): LabState | undefined {
  try {
    return JSON.parse(readFileSync(p.state, 'utf8')) as LabState;
  } catch {
    return undefined;
  }
}

export function listLabs(runDir: string): string[] {
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir).filter((n) => existsSync(path.join(runDir, n, 'state.json')));
}

/** A live process (a zombie, dead but not yet reaped, counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
