/**
 * The run directory (/run/sharpctl/<lab>/): which lab is up, its daemon, its
 * socket. Separate CLI invocations find each other's labs here.
 */
import { readFileSync, writeFileSync, readdirSync, existsSync, renameSync, openSync, closeSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { addonPath } from '../bpf/addon-path.js';
import type { NativeBinding } from '../bpf/native.js';

/** the addon, loaded at the first lock: commands that only read the run directory (sharpctl status) never load it */
let native: NativeBinding | undefined;
const addon = (): NativeBinding => (native ??= createRequire(import.meta.url)(addonPath()) as NativeBinding);

export interface LabState {
  name: string;
  pid: number;
  /** the daemon's start time (/proc/<pid>/stat, clock ticks since boot): a reused pid is another process */
  pidStart?: number;
  prefix: string;
  status: 'starting' | 'ready' | 'failed';
  error?: string;
  startedAt: string;
  socket: string;
  /** where the daemon serves its handover metrics (HTTP on a Unix socket, mode 0600); absent in a lab started by an older sharpctl */
  metricsSocket?: string;
  namespaces: string[];
  target: 'xdp' | 'bmv2';
  /** what a replacement daemon needs to adopt the lab (lab recover); absent: the lab cannot be recovered (BMv2, userspace VNFs, an older sharpctl) */
  adopt?: LabAdoption;
  /** the handover journal (FileJournal): what a replacement daemon recovers */
  journal?: string;
  /** the daemons that ran this lab before this one and died: their sessions may still hold processes they started (lab down stops them) */
  previousDaemons?: DaemonRecord[];
  /** the traffic run in progress (traffic start): a replacement daemon says it ended with the daemon that ran it */
  traffic?: TrafficRecord;
}

/** A process by pid and start time: a reused pid is another process. */
export interface DaemonRecord {
  pid: number;
  pidStart?: number;
}

export interface LabAdoption {
  /** the standard lab's instances (no spec file) */
  instances: number;
  /** the validated spec the lab was built from (in the run directory), or none: the standard lab */
  spec?: string;
  /** the node folder (configs, lab-nodes.json, certs) */
  nodesDir: string;
  /** the node processes, by the lab's node name (switch or instance) */
  nodes: { role: string; pid: number; pidStart?: number }[];
  /** the management network's namespace and root-namespace end */
  management: { netns: string; rootIfname: string };
}

export interface TrafficRecord {
  startedAt: string;
  rate: number;
  flows: number;
  reverse: boolean;
}

export interface LabPaths {
  dir: string;
  state: string;
  socket: string;
  /** the daemon's Prometheus metrics (GET /metrics) */
  metrics: string;
  log: string;
}

export function labPaths(runDir: string, name: string): LabPaths {
  const dir = path.join(runDir, name);
  return { dir, state: path.join(dir, 'state.json'), socket: path.join(dir, 'ctl.sock'), metrics: path.join(dir, 'metrics.sock'), log: path.join(dir, 'daemon.log') };
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

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined when there is no such process. */
export function processStartTime(pid: number): number | undefined {
  const f = procStat(pid);
  return f === undefined ? undefined : Number(f[19]);
}

/** A process as a record to find it again by: its pid and, while it runs, its start time. */
export function processRecord(pid: number): DaemonRecord {
  const start = processStartTime(pid);
  return start === undefined ? { pid } : { pid, pidStart: start };
}

/** The fields of /proc/<pid>/stat after "(comm)": state, ppid, pgrp, session, …; index i is field i + 3. */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** `pid` is alive and is the very process that started at `start` (not a later one that reuses the pid). */
export function sameProcess(pid: number, start: number | undefined): boolean {
  if (!processAlive(pid)) return false;
  return start === undefined || processStartTime(pid) === start;
}

/**
 * Stops processes by pid, each only while it is still the process recorded
 * (pid and start time): SIGTERM, then SIGKILL after `graceMs`. Returns the
 * pids it signalled.
 */
export async function stopRecordedProcesses(procs: readonly DaemonRecord[], graceMs = 5_000): Promise<number[]> {
  const live = procs.filter((p) => sameProcess(p.pid, p.pidStart));
  const signal = (sig: NodeJS.Signals): void => {
    for (const p of live) {
      if (!sameProcess(p.pid, p.pidStart)) continue;
      try {
        process.kill(p.pid, sig);
      } catch {
        // gone meanwhile
      }
    }
  };
  signal('SIGTERM');
  for (let waited = 0; waited < graceMs && live.some((p) => sameProcess(p.pid, p.pidStart)); waited += 50) await new Promise((r) => setTimeout(r, 50));
  signal('SIGKILL');
  return live.map((p) => p.pid);
}

/** The lab's daemon runs: its pid is alive and, when the state has it, with the recorded start time. */
export function daemonAlive(st: Pick<LabState, 'pid' | 'pidStart'>): boolean {
  return sameProcess(st.pid, st.pidStart);
}

/**
 * Processes left of a lab daemon's session: the daemon runs detached (its
 * own session, session id = its pid), and every child it starts (redis-server,
 * E-State peers, the Mininet script) stays in that session unless it leaves
 * on purpose. Only when the daemon itself is gone, and no other process took
 * its pid (which the kernel does not hand out while the session has members),
 * and only processes started after the daemon.
 */
export function sessionLeftovers(st: Pick<LabState, 'pid' | 'pidStart'>): { pid: number; comm: string }[] {
  if (st.pidStart === undefined) return [];
  if (processAlive(st.pid)) return []; // the daemon itself, or an unrelated process that reuses its pid: its session is not ours
  const out: { pid: number; comm: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(d)) continue;
    const pid = Number(d);
    const f = procStat(pid);
    if (f === undefined || f[0] === 'Z') continue;
    if (Number(f[3]) !== st.pid || Number(f[19]) < st.pidStart) continue;
    let comm = '?';
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    out.push({ pid, comm });
  }
  return out;
}

/** Stops the leftovers of a dead daemon's session (SIGTERM, then SIGKILL after `graceMs`); returns what it stopped. */
export async function stopSessionLeftovers(st: Pick<LabState, 'pid' | 'pidStart'>, graceMs = 3_000): Promise<{ pid: number; comm: string }[]> {
  const left = sessionLeftovers(st);
  if (left.length === 0) return [];
  // the same processes we found, still: never a process that took one's pid since
  await stopRecordedProcesses(left.map((p) => processRecord(p.pid)), graceMs);
  return left;
}

// ---------------------------------------------------------------- the lab lock

/**
 * The lock that makes a lab name exclusive: flock(2) on
 * <runDir>/.<name>.lock. It belongs to an open file description, so it is
 * released when the last process holding that description exits, however
 * it exits (SIGKILL included). `lab up` takes it before it changes anything
 * and hands it to the daemon it starts (an inherited descriptor); `lab down`
 * takes it before it removes anything. The file itself is never removed
 * (removing it would let a second holder lock a new file of the same name).
 */
export interface LabLock {
  readonly fd: number;
  readonly path: string;
  release(): void;
}

export function lockPath(runDir: string, name: string): string {
  return path.join(runDir, `.${name}.lock`);
}

/** Takes the lab's lock, or returns undefined when another process holds it. */
export function tryLockLab(runDir: string, name: string): LabLock | undefined {
  mkdirSync(runDir, { recursive: true });
  const p = lockPath(runDir, name);
  const fd = openSync(p, 'a'); // O_CLOEXEC: only a child given it explicitly inherits it
  let taken = false;
  try {
    taken = addon().flock(fd, 'ex', true);
  } finally {
    if (!taken) closeSync(fd);
  }
  if (!taken) return undefined;
  let released = false;
  return {
    fd,
    path: p,
    release: () => {
      if (released) return;
      released = true;
      closeSync(fd);
    },
  };
}

/** Waits up to `timeoutMs` for the lab's lock; `signal` ends the wait early, rejecting with its reason. */
export async function lockLab(runDir: string, name: string, timeoutMs: number, signal?: AbortSignal): Promise<LabLock | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const l = tryLockLab(runDir, name);
    if (l !== undefined || Date.now() >= until) return l;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, 50);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

// ---------------------------------------------------------------- who owns a namespace

export interface LiveDaemon {
  pid: number;
  name: string;
  runDir: string;
}

/** Every running lab daemon on this machine, whatever its run directory (found by its command line). */
export function liveDaemons(): LiveDaemon[] {
  const out: LiveDaemon[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(d)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!argv.some((a) => a.endsWith('/src/lab/daemon.js'))) continue;
    const get = (k: string): string | undefined => {
      const i = argv.indexOf(k);
      return i >= 0 ? argv[i + 1] : undefined;
    };
    const name = get('--name');
    if (name !== undefined && processAlive(Number(d))) out.push({ pid: Number(d), name, runDir: get('--run-dir') ?? '' });
  }
  return out;
}

/** Prefixes the demo and the benchmarks give their labs: the pid of the process that owns them. */
const PID_PREFIXES = [/^sharp-demo([0-9]+)-/, /^sharp-exp([0-9]+)-/, /^sharp-bench-(?:rate-|ovh-)?([0-9]+)-/];

/**
 * Who keeps a sharp- namespace alive: a running lab daemon (of any run
 * directory) whose lab's prefix it has, or the running demo/benchmark
 * process whose pid its name carries. undefined: nobody (a stray).
 */
export function namespaceOwner(ns: string, daemons: readonly LiveDaemon[] = liveDaemons()): { pid: number; what: string } | undefined {
  const lab = /^sharp-([a-z][a-z0-9]*)-/.exec(ns)?.[1];
  const d = lab === undefined ? undefined : daemons.find((x) => x.name === lab);
  if (d !== undefined) return { pid: d.pid, what: `lab '${d.name}' (daemon pid ${d.pid}, run directory ${d.runDir})` };
  for (const re of PID_PREFIXES) {
    const pid = re.exec(ns)?.[1];
    if (pid !== undefined && processAlive(Number(pid))) return { pid: Number(pid), what: `process ${pid}` };
  }
  return undefined;
}
