/**
 * Commands that drive a running lab through its daemon: lab up/down/status,
 * rule, handover, status, traffic, report.
 */
// Imported here only what `status`, `report` and the other daemon requests
// need; the lab's own machinery (specs, nodes, compiles, BMv2) is imported
// by the commands that use it, so that those requests answer at once.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { LabSpec } from '../lab/spec/types.js';
import { printable } from '../lab/spec/util.js';
import path from 'node:path';
import { Command, Option } from './commander.js';
import { objectsDir, repoRoot, runDir } from './paths.js';
import { call, DaemonClosedError, DaemonTimeoutError, DaemonUnreachableError, type CallOptions, type DeadlinedMethod } from '../lab/rpc.js';
import {
  labPaths,
  listLabs,
  readState,
  daemonAlive,
  processStartTime,
  sameProcess,
  tryLockLab,
  lockLab,
  lockPath,
  liveDaemons,
  namespaceOwner,
  stopSessionLeftovers,
  type LabPaths,
  type LabState,
} from '../lab/run-dir.js';
import { listNetns, deleteNetns } from '../net/iproute.js';
import type { RuleMatch } from '../dataplane/types.js';
import { dropCountersText, type DropCounters } from '../report/drop-counters.js';
import { formatIpv4, networkOf, parseCidr } from '../lab/spec/util.js';
import { EnvironmentError, InterruptedError, LabError, UsageError, requireRoot } from './errors.js';
import { int, ipv4Prefix, labName, LAB_NAME, LAB_NAME_HELP, seconds } from './options.js';
import { interruption, sleep, tidying } from './interrupt.js';

export { LabError };

const out = (json: boolean | undefined, value: unknown, human: () => void): void => {
  if (json) console.log(JSON.stringify(value, null, 2));
  else human();
};

/** " --name x", or nothing for the default lab: what to add to a command suggested */
const nameArg = (name: string): string => (name === 'default' ? '' : ` --name ${name}`);

/**
 * What to say of a lab whose daemon is gone: a lab that can be adopted
 * (XDP on node processes, the state says how) is offered to `lab recover`;
 * any other only to `lab down`.
 */
export function deadDaemonMessage(st: Pick<LabState, 'name' | 'pid' | 'adopt'>): string {
  const n = nameArg(st.name);
  if (st.adopt === undefined) return `lab '${st.name}' lost its daemon (pid ${st.pid} is gone) and cannot be recovered (only an XDP lab of node processes can): sharpctl lab down${n} removes it, then lab up${n}`;
  return `lab '${st.name}' lost its daemon (pid ${st.pid} is gone); its node processes keep forwarding. sharpctl lab recover${n} starts a new daemon that adopts the lab and finishes or rolls back any handover in flight; sharpctl lab down${n} removes it instead`;
}

function liveLab(name: string): LabState {
  const st = readState(labPaths(runDir, name));
  if (st === undefined) throw new LabError(`lab '${name}' is not up (sharpctl lab up${nameArg(name)})`);
  if (!daemonAlive(st)) throw new LabError(deadDaemonMessage(st));
  if (st.status !== 'ready') throw new LabError(`lab '${name}' is ${st.status}${st.error ? `: ${st.error}` : ''}`);
  return st;
}

/** the last line of a daemon's log, for "what happened" */
function lastLogLine(name: string): string | undefined {
  try {
    const lines = readFileSync(labPaths(runDir, name).log, 'utf8').trim().split('\n');
    const last = lines[lines.length - 1]?.trim();
    return last ? printable(last.length > 200 ? `${last.slice(0, 197)}...` : last) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A request to a lab's daemon: every one has a deadline (rpc DEADLINE_MS, or
 * the caller's), ends on Ctrl-C, and fails at once, saying so, when the
 * daemon hangs up.
 */
function daemon<T>(st: LabState, method: DeadlinedMethod, params?: unknown, options?: CallOptions): Promise<T>;
function daemon<T>(st: LabState, method: string, params: unknown, options: CallOptions & { timeoutMs: number }): Promise<T>;
async function daemon<T>(st: LabState, method: string, params?: unknown, options: CallOptions = {}): Promise<T> {
  try {
    // the overloads see to it that a method without a DEADLINE_MS entry comes with its timeoutMs
    return await call<T>(st.socket, method as DeadlinedMethod, params, { signal: interruption, ...options });
  } catch (e) {
    if (e instanceof DaemonClosedError) {
      const gone = daemonAlive(st) ? '' : ` (daemon pid ${st.pid} has exited${((l) => (l ? `; the last line of its log ${labPaths(runDir, st.name).log}: ${l}` : ''))(lastLogLine(st.name))}; ${st.adopt === undefined ? `sharpctl lab down${nameArg(st.name)} removes the lab` : `sharpctl lab recover${nameArg(st.name)} adopts the lab again`})`;
      throw new LabError(`${e.message}${gone}`, { cause: e });
    }
    if (e instanceof DaemonUnreachableError && (e.code === 'EACCES' || e.code === 'EPERM')) {
      throw new EnvironmentError(`talking to lab '${st.name}' needs root: its daemon's socket ${e.socketPath} is root's`, { cause: e });
    }
    if (e instanceof DaemonUnreachableError || e instanceof DaemonTimeoutError) throw new LabError(`lab '${st.name}': ${e.message}`, { cause: e });
    throw e;
  }
}

/** A wait that ends early only with `signal` (labDown when tidying up after an interruption has none). */
const pause = (ms: number, signal?: AbortSignal): Promise<void> => (signal ? sleep(ms, signal) : new Promise((r) => setTimeout(r, ms)));

/** The lab a spec names, when --name does not name one (the schema holds spec names to the same rule). */
function specLabName(specName: string, file: string): string {
  if (LAB_NAME.pattern.test(specName)) return specName;
  throw new UsageError(`the spec ${file} is named '${specName}', which cannot name a lab (${LAB_NAME.rule}); give the lab a name with --name`);
}

interface DownResult {
  name: string;
  daemon: 'stopped' | 'not running';
  removedNamespaces: string[];
  /** processes of a crashed daemon's session that lab down stopped (only when there were any) */
  stoppedProcesses?: string[];
  /** namespaces with the lab's prefix that a running lab, demo or benchmark elsewhere owns: left alone */
  keptNamespaces?: string[];
}

/** A daemon by its pid and start time: the state's, or that of one just started that has written no state yet. */
type DaemonProcess = Pick<LabState, 'pid' | 'pidStart'>;

/**
 * Stops a running daemon: asks it (then waits 10 s), else SIGTERM; SIGKILL
 * if it is still there after 10 s; each only while it is still the very same
 * process (daemonAlive: pid and start time). The waits end early, with the
 * InterruptedError, only on `signal` (none when tidying up after an
 * interruption).
 */
async function stopDaemon(p: LabPaths, st: DaemonProcess, signal?: AbortSignal): Promise<void> {
  const alive = (): boolean => daemonAlive(st);
  if (!alive()) return;
  let asked = false;
  try {
    await call(p.socket, 'shutdown', undefined, signal === undefined ? {} : { signal });
    asked = true;
  } catch (e) {
    if (e instanceof InterruptedError) throw e;
  }
  if (!asked && alive()) process.kill(st.pid, 'SIGTERM'); // our own daemon, found through our run directory or just started
  for (let i = 0; i < 200 && alive(); i++) await pause(50, signal);
  if (alive()) process.kill(st.pid, 'SIGKILL');
  for (let i = 0; i < 100 && alive(); i++) await pause(50, signal);
}

/**
 * Removes what a lab left (call with the lab's lock held, its daemon gone):
 * the processes of the dead daemon's session, the namespaces with its
 * prefix that nobody running owns, its run directory.
 */
async function removeLeftovers(name: string, p: LabPaths, st: (DaemonProcess & Pick<LabState, 'previousDaemons'>) | undefined): Promise<Omit<DownResult, 'name' | 'daemon'>> {
  // the daemon's session, and those of the daemons it replaced (lab recover): node processes they started may be among them
  const stopped: string[] = [];
  for (const d of st === undefined ? [] : [st, ...(st.previousDaemons ?? [])]) stopped.push(...(await stopSessionLeftovers(d)).map((x) => `${x.comm} (pid ${x.pid})`));
  const daemons = liveDaemons();
  const all = listNetns(`sharp-${name}-`);
  const kept = all.filter((ns) => namespaceOwner(ns, daemons) !== undefined);
  const removedNamespaces = all.filter((ns) => !kept.includes(ns));
  // the lab's node daemons pinned their programs: detach them while their namespaces still exist
  const { detachLabNodesIn } = await import('../lab/lab-nodes.js');
  detachLabNodesIn(path.join(p.dir, 'work', 'nodes'), path.join(repoRoot, 'dist/src/cli/main.js'));
  for (const ns of removedNamespaces) deleteNetns(ns);
  rmSync(p.dir, { recursive: true, force: true });
  return { removedNamespaces, ...(stopped.length ? { stoppedProcesses: stopped } : {}), ...(kept.length ? { keptNamespaces: kept } : {}) };
}

/**
 * Removes a lab: asks its daemon to stop, then (holding the lab's lock)
 * removes whatever is left. `signal` ends its waits early with the
 * InterruptedError.
 */
async function labDown(name: string, signal?: AbortSignal): Promise<DownResult> {
  const p = labPaths(runDir, name);
  const st = readState(p);
  let daemon: 'stopped' | 'not running' = 'not running';
  if (st !== undefined && daemonAlive(st)) {
    await stopDaemon(p, st, signal);
    daemon = 'stopped';
  }
  const lock = await lockLab(runDir, name, 20_000, signal);
  if (lock === undefined) throw new LabError(`lab '${name}' is being brought up by another sharpctl right now (it holds ${lockPath(runDir, name)}); run lab down again when that is done`);
  try {
    return { name, daemon, ...(await removeLeftovers(name, p, st)) };
  } finally {
    lock.release();
  }
}

/** sharp- namespaces that no running lab (of any run directory), demo or benchmark owns. */
function strayNamespaces(exclude: ReadonlySet<string> = new Set()): string[] {
  const daemons = liveDaemons();
  return listNetns('sharp-').filter((ns) => !exclude.has(ns) && namespaceOwner(ns, daemons) === undefined);
}

/** Checks a --src/--dst value (ipv4Prefix has parsed it): an address for --exact, else a prefix without host bits. */
function prefixOption(flag: string, v: string | undefined, exact: boolean): string | undefined {
  if (v === undefined) return undefined;
  const c = parseCidr(v);
  if (c === undefined) throw new UsageError(`${flag}: '${v}' is not an IPv4 ${exact ? 'address (like 10.0.0.1)' : 'address or prefix (like 10.0.0.1 or 10.0.0.0/24)'}`);
  if (exact) {
    if (c.len !== undefined) throw new UsageError('--exact takes addresses, not prefixes');
    return v;
  }
  const len = c.len ?? 32;
  const net = networkOf(c.addr, len);
  if (net !== c.addr) throw new UsageError(`${flag}: ${v} has address bits set beyond its /${len} prefix; did you mean ${formatIpv4(net)}/${len}?`);
  return `${formatIpv4(net)}/${len}`;
}

/** A traffic report's stamp fields, as the daemon sends them. */
interface StampFields {
  stampMismatches: number;
  /** false: nothing was compared (the lab's VNFs do not stamp); stampMismatches is 0 then */
  stampsChecked?: boolean;
  /** why not, e.g. "linux VNFs do not stamp" */
  stampsNotChecked?: string;
}

/** "stamp mismatches 0", or that none were compared: a 0 must not pass for a check that never ran */
function stampText(r: StampFields): string {
  return r.stampsChecked === false ? `stamps not checked (${r.stampsNotChecked ?? "the lab's VNFs do not stamp"})` : `stamp mismatches ${r.stampMismatches}`;
}

/** the handover engine's default timeout, sent with every handover so the client knows its deadline */
const HANDOVER_TIMEOUT_MS = 30_000;
/** how long past its timeout a handover may take to roll back before the client gives up on the daemon */
const HANDOVER_MARGIN_MS = 30_000;

/** "Examples:" at the end of a command's help */
const examples = (...lines: string[]): string => `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`;

export function addLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description('bring a lab of network namespaces up and down')
    .addHelpText(
      'after',
      examples('sharpctl lab up', 'sharpctl lab status', 'sharpctl lab recover            # after the lab daemon died (kill -9, a crash)', 'sharpctl lab down --all') +
        '\n\nThe lab daemon journals its handovers. If it dies, the lab keeps forwarding (its\nnode processes own the data plane) and every lab command says so: sharpctl lab\nrecover starts a new daemon that adopts the lab and finishes or rolls back the\nhandover in flight; sharpctl lab down removes the lab instead.',
    );

  lab
    .command('up')
    .description('build a lab from a spec (default: client — s1 — {vnf1, vnf2} — s2 — server), load and attach the programs, install its rules; as root')
    .argument('[spec]', 'lab spec, JSON or YAML, a regular file of at most 1 MiB (see src/lab/spec/default.yaml)')
    .option('--name <name>', `${LAB_NAME_HELP} (namespaces are sharp-<name>-*; default: the spec's name, else 'default')`, labName)
    .option('--instances <n>', 'VNF instances of the standard lab, 2 to 8 (default 2; a spec lists its own)', int('--instances', 2, 8))
    .addOption(new Option('--target <target>', "switches: XDP in namespaces, or BMv2 (simple_switch_grpc) in Mininet over P4Runtime (default: the spec's target, else xdp)").choices(['xdp', 'bmv2']))
    .option('--json', 'print the lab as JSON')
    .addHelpText('after', examples('sharpctl lab up', 'sharpctl lab up my-lab.yaml --name lab2', 'sharpctl lab up --target bmv2', 'sharpctl lab up --instances 3 --json'))
    .action(async (specFile: string | undefined, o: { name?: string; instances?: number; target?: 'xdp' | 'bmv2'; json?: boolean }) => {
      requireRoot('sharpctl lab up');
      const { loadSpec } = await import('../lab/spec/index.js');
      // every problem of the spec at once, before anything is created
      const spec = specFile === undefined ? undefined : loadSpec(specFile);
      if (spec !== undefined && o.instances !== undefined) {
        throw new UsageError(`--instances sizes the standard lab; the spec ${specFile} lists its VNFs itself (vnfs:). Leave out --instances, or the spec`);
      }
      const name = o.name ?? (spec === undefined ? 'default' : specLabName(spec.name, specFile!));
      if (spec !== undefined && o.name !== undefined && o.name !== spec.name && !o.json) process.stderr.write(`lab named '${o.name}' (--name), not '${spec.name}' (the spec's name)\n`);
      const target = o.target ?? spec?.target ?? 'xdp';
      if (target === 'bmv2') {
        const { bmv2Availability, Bmv2UnavailableError } = await import('../lab/mininet-lab.js');
        const avail = bmv2Availability();
        if (!avail.ok) throw new Bmv2UnavailableError(`target bmv2: ${avail.reason}`);
      }
      const p = labPaths(runDir, name);
      const downHint = `sharpctl lab down${name === 'default' ? '' : ` --name ${name}`}`;
      // one lab up or down per name at a time; the daemon inherits the lock and holds it for its life
      const lock = tryLockLab(runDir, name);
      if (lock === undefined) {
        const st = readState(p);
        if (st !== undefined && daemonAlive(st) && st.status === 'ready') throw new LabError(`lab '${name}' is up already (daemon pid ${st.pid}); ${downHint} first`);
        throw new LabError(`lab '${name}' is being brought up or down by another sharpctl right now (it holds ${lockPath(runDir, name)}); nothing was changed`);
      }
      try {
        const st = readState(p);
        if (st !== undefined && daemonAlive(st)) throw new LabError(`lab '${name}' is up already (daemon pid ${st.pid}); ${downHint} first`);
        // a lab whose daemon died but whose nodes still forward is not a crashed run's leftovers to sweep away: it is said, nothing is changed
        if (st !== undefined && st.adopt !== undefined && listNetns(st.prefix).length > 0) throw new LabError(`${deadDaemonMessage(st)} (then lab up builds a new one); nothing was changed`);
        const elsewhere = liveDaemons().find((d) => d.name === name);
        if (elsewhere !== undefined) {
          throw new LabError(`a lab named '${name}' runs from another run directory (${elsewhere.runDir}, daemon pid ${elsewhere.pid}); its namespaces would be the same: choose another --name`);
        }
        await tidying(`taking lab '${name}' down again`, async () => {
          try {
            await up(name, p, st, lock.fd, o.instances ?? 2, target, spec, o.json === true);
          } catch (e) {
            if (!interruption.aborted) throw e;
            // up() has stopped the daemon it started; nothing half-built stays behind (we hold the lock)
            await removeLeftovers(name, p, undefined);
            throw new InterruptedError(`interrupted: lab '${name}' was taken down again`, { cause: e });
          }
        });
      } finally {
        lock.release(); // our descriptor; the daemon's stays open
      }
    });

  /**
   * Starts a lab daemon (detached, its log in the run directory, the lab's
   * lock handed to it) and waits until it is ready, has failed or has
   * exited; `state` is what it wrote last (undefined: it wrote none). A wait
   * that is interrupted calls `abandon` with the daemon, then rethrows.
   */
  const startDaemon = async (p: LabPaths, lockFd: number, args: readonly string[], json: boolean, abandon: (d: DaemonProcess) => Promise<void>): Promise<{ started: DaemonProcess; state: LabState | undefined }> => {
    const log = openSync(p.log, 'a');
    const child = spawn(process.execPath, [path.join(repoRoot, 'dist/src/lab/daemon.js'), '--name', path.basename(p.dir), '--run-dir', runDir, '--objects', objectsDir, '--lock-fd', '3', ...args], { detached: true, stdio: ['ignore', log, log, lockFd] });
    child.unref();
    // the daemon by pid and start time, for as long as it has written no state
    const startTime = processStartTime(child.pid!);
    const started: DaemonProcess = { pid: child.pid!, ...(startTime === undefined ? {} : { pidStart: startTime }) };
    if (!json) process.stderr.write(` (daemon pid ${child.pid})`);
    let state: LabState | undefined;
    try {
      for (let i = 0; i < 600; i++) {
        state = readState(p);
        // a recovery finds the dead daemon's state at first: only this daemon's counts
        if (state?.pid === started.pid && (state.status === 'ready' || state.status === 'failed')) break;
        if (!sameProcess(started.pid, started.pidStart)) {
          state = readState(p);
          break;
        }
        if (!json && i % 10 === 9) process.stderr.write('.');
        await sleep(50);
      }
    } catch (e) {
      await abandon(state?.pid === started.pid ? state : started);
      throw e;
    } finally {
      if (!json) process.stderr.write('\n');
    }
    return { started, state: state?.pid === started.pid ? state : undefined };
  };

  /**
   * lab up with the lab's lock held (`lockFd`, handed to the daemon), from
   * the leftovers of a crashed run to the status of the ready lab. A start
   * that fails or is interrupted stops the daemon it started and removes
   * what it built.
   */
  const up = async (name: string, p: LabPaths, old: LabState | undefined, lockFd: number, instances: number, target: 'xdp' | 'bmv2', spec: LabSpec | undefined, json: boolean): Promise<void> => {
    await removeLeftovers(name, p, old); // of a crashed run
    interruption.throwIfAborted();
    const { compileXdp } = await import('./compile.js');
    const compiled = compileXdp();
    if (compiled.built.length && !json) process.stderr.write(`compiled ${compiled.built.join(', ')}\n`);
    interruption.throwIfAborted();
    mkdirSync(p.dir, { recursive: true });
    const specArgs: string[] = [];
    if (spec !== undefined) {
      const specJson = path.join(p.dir, 'spec.json');
      writeFileSync(specJson, JSON.stringify(spec, null, 2) + '\n');
      specArgs.push('--spec', specJson);
    }
    if (!json) process.stderr.write(`starting lab '${name}' on ${target === 'bmv2' ? 'BMv2 in Mininet' : 'XDP'}`);
    // a daemon still starting may have written no state yet: it is stopped by its pid (and start time) before what it built is removed
    const abandon = async (d: DaemonProcess): Promise<void> => {
      await stopDaemon(p, d);
      await removeLeftovers(name, p, d);
    };
    const { started, state } = await startDaemon(p, lockFd, ['--instances', String(instances), '--target', target, ...specArgs], json, abandon);
    try {
      if (state?.status !== 'ready') {
        const why = state?.error ?? (existsSync(p.log) ? readFileSync(p.log, 'utf8').trim().split('\n').slice(-5).join('\n') : 'no log');
        throw new LabError(`lab '${name}' did not come up: ${why}`);
      }
      const status = await daemon<Record<string, unknown>>(state, 'status');
      out(json, status, () => {
        console.log(`lab '${name}' is up: namespaces ${state!.prefix}*`);
        printStatus(status);
      });
    } catch (e) {
      await abandon(state ?? started);
      throw e;
    }
  };

  lab
    .command('down')
    .description('tear a lab down: stop its daemon and every process it started, remove its namespaces and programs; idempotent, also after a crash; as root')
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .addOption(new Option('--all', "every lab of this run directory, and every stray namespace (one no running lab, demo or benchmark owns)").conflicts('name'))
    .addOption(new Option('--stray', 'only the stray namespaces: sharp-* namespaces no running lab (of any run directory), demo or benchmark owns').conflicts(['name', 'all']))
    .option('--json', 'print what was removed as JSON')
    .addHelpText('after', examples('sharpctl lab down', 'sharpctl lab down --name lab2', 'sharpctl lab down --stray', 'sharpctl lab down --all'))
    .action(async (o: { name: string; all?: boolean; stray?: boolean; json?: boolean }) => {
      requireRoot('sharpctl lab down', 'it stops the lab daemon and removes network namespaces');
      const names = o.stray ? [] : o.all ? listLabs(runDir) : [o.name];
      const results: DownResult[] = [];
      try {
        for (const n of names) results.push(await labDown(n, interruption));
      } catch (e) {
        if (e instanceof InterruptedError) {
          const again = o.all ? ' --all' : o.name === 'default' ? '' : ` --name ${o.name}`;
          throw new InterruptedError(`interrupted: not every lab is down; sharpctl lab down${again} again finishes it`, { cause: e });
        }
        throw e;
      }
      if (o.all || o.stray) {
        const stray = strayNamespaces();
        for (const ns of stray) deleteNetns(ns);
        if (stray.length || o.stray) results.push({ name: '(stray)', daemon: 'not running', removedNamespaces: stray });
      }
      out(o.json, results, () => {
        for (const r of results) {
          console.log(`${r.name}: daemon ${r.daemon}, ${r.removedNamespaces.length} namespaces removed${r.removedNamespaces.length ? ` (${r.removedNamespaces.join(', ')})` : ''}`);
          if (r.stoppedProcesses) console.log(`  stopped what the crashed daemon had started: ${r.stoppedProcesses.join(', ')}`);
          if (r.keptNamespaces) console.log(`  left alone, owned by a running lab elsewhere: ${r.keptNamespaces.join(', ')}`);
        }
      });
    });

  lab
    .command('recover')
    .description(
      "replace a lab daemon that died (kill -9, a crash): a new daemon adopts the lab's namespaces and node processes (starting again any that died too: they re-adopt their pins), reconnects over the management network with the lab's certificates, finishes or rolls back every handover in its journal, and is then the lab's daemon; the traffic the dead daemon generated ended with it; as root",
    )
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'print the recovery as JSON')
    .addHelpText(
      'after',
      examples('sharpctl lab recover', 'sharpctl lab recover --name lab2 --json', "sharpctl lab recover --json | jq '.handovers[] | {id, outcome, reason}'") +
        '\n\nA lab whose daemon died keeps forwarding (its node processes own every kernel\nobject), and any lab command says so; lab recover adopts the lab, lab down\nremoves it. Only an XDP lab of node processes can be recovered (not BMv2, not\nuserspace VNFs: they live in the daemon).',
    )
    .action(async (o: { name: string; json?: boolean }) => {
      requireRoot('sharpctl lab recover', 'it starts a lab daemon that drives the lab\'s node processes');
      const p = labPaths(runDir, o.name);
      const lock = tryLockLab(runDir, o.name);
      const st = readState(p);
      if (lock === undefined) {
        if (st !== undefined && daemonAlive(st)) throw new LabError(`lab '${o.name}' has a running daemon (pid ${st.pid}): nothing to recover`);
        throw new LabError(`lab '${o.name}' is being brought up, down or recovered by another sharpctl right now (it holds ${lockPath(runDir, o.name)}); nothing was changed`);
      }
      try {
        if (st === undefined) throw new LabError(`lab '${o.name}' is not up: nothing to recover (sharpctl lab up${nameArg(o.name)})`);
        if (daemonAlive(st)) throw new LabError(`lab '${o.name}' has a running daemon (pid ${st.pid}): nothing to recover`);
        if (st.adopt === undefined) throw new LabError(deadDaemonMessage(st));
        const present = new Set(listNetns(st.prefix));
        const missing = st.namespaces.filter((ns) => !present.has(ns));
        if (missing.length) throw new LabError(`lab '${o.name}' cannot be recovered: its namespace(s) ${missing.join(', ')} are gone; sharpctl lab down${nameArg(o.name)} removes the rest, then lab up${nameArg(o.name)}`);
        if (!o.json) process.stderr.write(`recovering lab '${o.name}' (its daemon pid ${st.pid} is gone)`);
        const { started, state } = await startDaemon(p, lock.fd, ['--recover'], o.json === true, (d) => stopDaemon(p, d));
        if (state?.status !== 'ready') {
          // nothing is removed: the lab stays as the dead daemon left it, forwarding
          await stopDaemon(p, state ?? started);
          const why = state?.error ?? (existsSync(p.log) ? readFileSync(p.log, 'utf8').trim().split('\n').slice(-5).join('\n') : 'no log');
          throw new LabError(`lab '${o.name}' was not recovered: ${why}; the lab is as the dead daemon left it (sharpctl lab recover${nameArg(o.name)} tries again, sharpctl lab down${nameArg(o.name)} removes it)`);
        }
        const status = await daemon<{ recovery?: RecoveryReport }>(state, 'status');
        const r = status.recovery!;
        out(o.json, r, () => printRecovery(o.name, state.pid, r));
        if (r.error !== undefined || r.handovers.some((h) => h.outcome !== 'completed' && h.outcome !== 'aborted')) process.exitCode = 1;
      } finally {
        lock.release(); // our descriptor; the new daemon's stays open
      }
    });

  lab
    .command('status')
    .description('which labs exist, their daemons and namespaces (degraded: a namespace of a running lab is gone); stray namespaces')
    .option('--name <name>', `only this lab (${LAB_NAME_HELP})`, labName)
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl lab status', "sharpctl lab status --json | jq '.labs[].name'"))
    .action(async (o: { name?: string; json?: boolean }) => {
      const all = listLabs(runDir).map((n) => {
        const st = readState(labPaths(runDir, n))!;
        const alive = daemonAlive(st);
        const namespaces = listNetns(st.prefix);
        const missingNamespaces = alive && st.status === 'ready' ? st.namespaces.filter((ns) => !namespaces.includes(ns)) : [];
        const gone = st.adopt === undefined ? `sharpctl lab down${nameArg(n)} cleans up` : `sharpctl lab recover${nameArg(n)} adopts the lab, lab down${nameArg(n)} cleans up`;
        const status = !alive ? `crashed (daemon gone: ${gone})` : missingNamespaces.length ? 'degraded' : st.status;
        return { name: n, status, pid: st.pid, namespaces, missingNamespaces };
      });
      const labs = all.filter((l) => o.name === undefined || l.name === o.name);
      const stray = strayNamespaces(new Set(all.flatMap((l) => l.namespaces)));
      out(o.json, { labs, strayNamespaces: stray }, () => {
        if (!labs.length) console.log(o.name === undefined ? 'no lab is up' : `lab '${o.name}' is not up`);
        for (const l of labs) {
          const missing = l.missingNamespaces.length ? ` (missing: ${l.missingNamespaces.join(', ')}; sharpctl lab down${l.name === 'default' ? '' : ` --name ${l.name}`}, then lab up)` : '';
          console.log(`${l.name}: ${l.status}${missing}, daemon pid ${l.pid}, ${l.namespaces.length} namespaces`);
        }
        if (stray.length) console.log(`stray namespaces (no running lab, demo or benchmark owns them; sharpctl lab down --stray removes only these): ${stray.join(', ')}`);
      });
    });

  lab
    .command('metrics')
    .description("the lab daemon's handover metrics, in the Prometheus text format: what GET /metrics answers on its Unix socket (<run dir>/<lab>/metrics.sock, mode 0600)")
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'the samples as JSON: [{name, labels, value}]')
    .addHelpText(
      'after',
      examples(
        'sharpctl lab metrics',
        "sharpctl lab metrics --name lab2 | grep '^sharp_handovers_total'",
        "sharpctl lab metrics --json | jq '.[] | select(.name == \"sharp_handover_phase_duration_seconds_sum\")'",
        'curl --unix-socket /run/sharpctl/default/metrics.sock http://lab/metrics',
      ) +
        '\n\nMetrics (each handover the daemon ran adds to them; they start at 0 with the daemon):\n' +
        '  sharp_handovers_total{outcome}                       completed, lossy, aborted, failed\n' +
        '  sharp_handover_lost_frames_total                     frames the handovers lost\n' +
        '  sharp_handover_duration_seconds{mode}                histogram: validation to outcome\n' +
        '  sharp_handover_phase_duration_seconds{phase}         histogram: arming, pre-marking, switching, draining, moving-state, releasing, cleaning\n' +
        '  sharp_handover_state_move_duration_seconds{backend}  histogram: the state move, by --state backend',
    )
    .action(async (o: { name: string; json?: boolean }) => {
      const st = liveLab(o.name);
      if (st.metricsSocket === undefined) throw new LabError(`lab '${o.name}' was brought up by a sharpctl without metrics: bring it down and up again to have them`);
      const { scrapeUnixSocket, MetricsScrapeError } = await import('../metrics/scrape.js');
      let text: string;
      try {
        text = await scrapeUnixSocket(st.metricsSocket);
      } catch (e) {
        if (e instanceof MetricsScrapeError && (e.code === 'EACCES' || e.code === 'EPERM')) throw new EnvironmentError(`reading lab '${st.name}'s metrics needs root: ${e.socketPath} is root's (mode 0600)`, { cause: e });
        if (e instanceof MetricsScrapeError) throw new LabError(`lab '${st.name}': ${e.message}`, { cause: e });
        throw e;
      }
      if (!o.json) {
        process.stdout.write(text);
        return;
      }
      const { parseExposition } = await import('../metrics/textfile.js');
      const samples = parseExposition(text, st.metricsSocket).flatMap((f) => f.samples.map((x) => ({ name: x.name, labels: Object.fromEntries(x.labels), value: Number.isFinite(x.value) ? x.value : x.value > 0 ? '+Inf' : x.value < 0 ? '-Inf' : 'NaN' })));
      console.log(JSON.stringify(samples, null, 2));
    });

  const rule = program
    .command('rule')
    .description('switch rules of the running lab')
    .addHelpText('after', examples('sharpctl rule list', 'sharpctl rule add --switch s1 --dst 10.0.0.0/24 --from client --priority 20 --to vnf2', 'sharpctl rule del 5'));
  rule
    .command('list')
    .description('rules with their actions and counters')
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl rule list', "sharpctl rule list --json | jq '.[] | {id, packets: .counters.packets}'"))
    .action(async (o: { name: string; json?: boolean }) => {
      const rules = await daemon<unknown[]>(liveLab(o.name), 'rule.list');
      out(o.json, rules, () => printRules(rules));
    });
  rule
    .command('add')
    .description('add a rule: exact (a whole 5-tuple) or wildcard (any subset of fields, with a priority)')
    .requiredOption('--switch <switch>', 'switch name, e.g. s1')
    .requiredOption('--to <node>', 'where matching packets go: a neighbour node (vnf2, client) or a port name (s1-vnf2)')
    .option('--src <cidr>', 'source address or prefix (a.b.c.d or a.b.c.d/len)', ipv4Prefix('--src'))
    .option('--dst <cidr>', 'destination address or prefix (a.b.c.d or a.b.c.d/len)', ipv4Prefix('--dst'))
    .option('--sport <port>', 'source port', int('--sport', 0, 65535))
    .option('--dport <port>', 'destination port', int('--dport', 0, 65535))
    .addOption(new Option('--proto <proto>', 'IP protocol').choices(['udp', 'tcp', 'icmp']))
    .option('--from <node>', 'ingress: only packets arriving from this neighbour')
    .option('--priority <n>', 'wildcard priority (higher wins; exact rules always win; default 0)', int('--priority', 0, 65535))
    .option('--exact', 'an exact 5-tuple rule (needs --src --dst --sport --dport --proto; no --priority, no --from)')
    .option('--id <id>', 'rule id (default: the lowest free one)', int('--id', 1, 4095))
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'print the rule as JSON')
    .addHelpText(
      'after',
      examples('sharpctl rule add --switch s1 --exact --src 10.0.0.1 --dst 10.0.0.2 --sport 20000 --dport 9000 --proto udp --to vnf2', 'sharpctl rule add --switch s1 --dst 10.0.0.0/24 --from client --priority 20 --to vnf2'),
    )
    .action(async (o: { switch: string; to: string; src?: string; dst?: string; sport?: number; dport?: number; proto?: string; from?: string; priority?: number; exact?: boolean; id?: number; name: string; json?: boolean }) => {
      const { PROTO_NUMBERS } = await import('../lab/spec/types.js');
      const proto = o.proto === undefined ? undefined : PROTO_NUMBERS[o.proto as 'udp' | 'tcp' | 'icmp'];
      if (proto !== undefined && proto !== PROTO_NUMBERS.udp && proto !== PROTO_NUMBERS.tcp) {
        const ports = (['sport', 'dport'] as const).filter((k) => (o[k] ?? 0) !== 0);
        if (ports.length) throw new UsageError(`ports exist only for tcp and udp: the switch sees port 0 in ${o.proto} packets, so this rule could never match (${ports.map((k) => `--${k} ${o[k]}`).join(', ')})`);
      }
      let match: RuleMatch;
      if (o.exact) {
        const missing = (['src', 'dst', 'sport', 'dport', 'proto'] as const).filter((k) => o[k] === undefined);
        if (missing.length) throw new UsageError(`--exact needs ${missing.map((m) => `--${m}`).join(', ')}`);
        if (o.priority !== undefined) throw new UsageError('--priority is for wildcard rules: an exact rule always wins over every wildcard rule, whatever its priority');
        if (o.from !== undefined) throw new UsageError('--from is for wildcard rules: an exact rule matches its 5-tuple from every ingress port (the exact table has no ingress field)');
        match = { kind: 'exact', flow: { src: prefixOption('--src', o.src, true)!, dst: prefixOption('--dst', o.dst, true)!, sport: o.sport!, dport: o.dport!, proto: proto! } };
      } else {
        const src = prefixOption('--src', o.src, false);
        const dst = prefixOption('--dst', o.dst, false);
        match = {
          kind: 'wildcard',
          priority: o.priority ?? 0,
          ...(src === undefined ? {} : { src }),
          ...(dst === undefined ? {} : { dst }),
          ...(o.sport === undefined ? {} : { sport: o.sport }),
          ...(o.dport === undefined ? {} : { dport: o.dport }),
          ...(proto === undefined ? {} : { proto }),
          ...(o.from === undefined ? {} : { inPort: o.from }),
        };
      }
      const r = await daemon<{ id: number }>(liveLab(o.name), 'rule.add', { switch: o.switch, to: o.to, match, ...(o.id === undefined ? {} : { id: o.id }) });
      out(o.json, r, () => console.log(`rule ${r.id} added`));
    });
  rule
    .command('del')
    .description('delete a rule')
    .argument('<id>', 'rule id', int('rule id', 1, 4095))
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl rule del 5', 'sharpctl rule del 5 --name lab2'))
    .action(async (id: number, o: { name: string; json?: boolean }) => {
      const r = await daemon(liveLab(o.name), 'rule.del', { id });
      out(o.json, r, () => console.log(`rule ${id} deleted`));
    });

  program
    .command('handover')
    .description('move the traffic of rules from one VNF instance to another: lossless, in order, no controller buffer')
    .argument('<rules>', "rule ids, comma separated (e.g. 1,3), or 'all' with --from")
    .requiredOption('--to <vnf>', 'the instance to move to')
    .option('--from <vnf>', 'the instance to move from (default: where the first rule sends)')
    .option('--state-delay <ms>', 'injected state-transfer delay', int('--state-delay', 0, 600_000), 0)
    .option('--timeout <ms>', 'give up (and roll back) after this long; the state delay counts', int('--timeout', 100, 3_600_000), HANDOVER_TIMEOUT_MS)
    .addOption(new Option('--mode <mode>', 'sharp (zero controller buffer) or the controller-buffer baseline').choices(['sharp', 'controller-buffer']).default('sharp'))
    .addOption(new Option('--state <backend>', "how VNF state moves (default: the lab spec's state)").choices(['vnf-map', 'estate', 'redis', 'copy']))
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', examples('sharpctl handover 1,3 --to vnf2', 'sharpctl handover all --from vnf2 --to vnf1 --state-delay 500', 'sharpctl handover 1 --to vnf2 --state-delay 60000 --timeout 90000'))
    .action(async (spec: string, o: { to: string; from?: string; stateDelay: number; timeout: number; mode: string; state?: string; name: string; json?: boolean }) => {
      const rules: number[] | 'all' = spec === 'all' ? 'all' : spec.split(',').map((x) => int('rule id', 1, 4095)(x.trim()));
      const st = liveLab(o.name);
      const t0 = Date.now();
      let id: number | undefined;
      let r: { outcome: string; reason?: string; durationMs: number; id: number; from: string; to: string };
      try {
        r = await daemon(
          st,
          'handover',
          { rules, to: o.to, stateDelayMs: o.stateDelay, mode: o.mode, timeoutMs: o.timeout, ...(o.state === undefined ? {} : { state: o.state }), ...(o.from === undefined ? {} : { from: o.from }) },
          {
            // the engine gives up after o.timeout and rolls back; the margin covers the rollback
            timeoutMs: o.timeout + HANDOVER_MARGIN_MS,
            onEvent: (ev) => {
              const e = ev as { id?: number; step: string; t: number; detail?: string };
              id ??= e.id;
              if (!o.json) process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(2).padStart(6)}s] ${e.step}${e.detail ? `: ${e.detail}` : ''}\n`);
            },
          },
        );
      } catch (e) {
        if (e instanceof InterruptedError)
          throw new InterruptedError(`interrupted: ${id === undefined ? 'the handover' : `handover ${id}`} goes on in the lab daemon (sharpctl status${o.name === 'default' ? '' : ` --name ${o.name}`} shows it)`, { cause: e });
        throw e;
      }
      out(o.json, r, () => console.log(`handover ${r.id} ${r.from} → ${r.to}: ${r.outcome} in ${r.durationMs.toFixed(1)} ms${r.reason ? ` (${r.reason})` : ''}`));
      if (r.outcome !== 'completed') process.exitCode = 1;
    });

  program
    .command('status')
    .description('rules, handovers in flight with their phase, counters, traffic')
    .option('--watch [seconds]', 'refresh every N seconds (default 1) until Ctrl-C', seconds('--watch', 86_400))
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON (one line per refresh with --watch)')
    .addHelpText('after', examples('sharpctl status', 'sharpctl status --watch', 'sharpctl status --watch 0.5 --json | jq -c .active'))
    .action(async (o: { watch?: number | true; name: string; json?: boolean }) => {
      const st = liveLab(o.name);
      const every = o.watch === undefined ? 0 : o.watch === true ? 1 : o.watch;
      for (;;) {
        const s = await daemon<Record<string, unknown>>(st, 'status');
        if (o.json) console.log(JSON.stringify(s));
        else {
          if (every) process.stdout.write('\x1b[2J\x1b[H');
          printStatus(s);
        }
        if (!every) break;
        await sleep(every * 1000); // Ctrl-C ends the wait at once (exit 130)
      }
    });

  const traffic = program
    .command('traffic')
    .description('probe traffic generator and sink in the running lab')
    .addHelpText('after', examples('sharpctl traffic start --rate 5000 --reverse', 'sharpctl traffic stop'));
  traffic
    .command('start')
    .description('start probes client → server (and back with --reverse): per-flow sequence numbers, any rate')
    .option('--rate <pps>', 'packets per second per direction', int('--rate', 1, 2_000_000), 1000)
    .option('--flows <n>', 'flows', int('--flows', 1, 4096), 4)
    .option('--reverse', 'also server → client')
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl traffic start --rate 20000 --flows 16 --reverse'))
    .action(async (o: { rate: number; flows: number; reverse?: boolean; name: string; json?: boolean }) => {
      const r = await daemon(liveLab(o.name), 'traffic.start', { rate: o.rate, flows: o.flows, reverse: o.reverse === true });
      out(o.json, r, () => console.log(`traffic started: ${o.flows} flows at ${o.rate} pps${o.reverse ? ', both directions' : ''}`));
    });
  traffic
    .command('stop')
    .description('stop the probes and report lost, reordered, duplicated packets and VNF stamp mismatches')
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl traffic stop', "sharpctl traffic stop --json | jq '.[].lost'"))
    .action(async (o: { name: string; json?: boolean }) => {
      const r = await daemon<({ direction: string; sent: number; delivered: number; lost: number; reported?: number; unaccounted?: number; reordered: number; duplicated: number } & StampFields)[]>(liveLab(o.name), 'traffic.stop');
      out(o.json, r, () => {
        for (const d of r) console.log(`${d.direction}: sent ${d.sent}, delivered ${d.delivered}, lost ${d.lost}${d.lost > 0 ? ` (counted ${d.reported ?? 0}, unaccounted ${d.unaccounted ?? d.lost})` : ''}, reordered ${d.reordered}, duplicated ${d.duplicated}, ${stampText(d)}`);
      });
      if (r.some((d) => d.lost + d.reordered + d.duplicated + d.stampMismatches > 0)) process.exitCode = 1;
    });

  program
    .command('report')
    .description('handovers done in this lab and the traffic numbers')
    .option('--name <name>', LAB_NAME_HELP, labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', examples('sharpctl report', "sharpctl report --json | jq '.handovers[] | select(.outcome != \"completed\")'"))
    .action(async (o: { name: string; json?: boolean }) => {
      const r = await daemon<{
        handovers: { id: number; from: string; to: string; outcome: string; durationMs: number; reason?: string }[];
        traffic?: ({ sent: number; delivered: number; lost: number; reordered: number; duplicated: number } & StampFields)[];
        drops: DropCounters;
        trafficEnded?: { note: string };
      }>(liveLab(o.name), 'report');
      out(o.json, r, () => {
        for (const h of r.handovers) console.log(`handover ${h.id} ${h.from} → ${h.to}: ${h.outcome} in ${h.durationMs} ms${h.reason ? ` (${h.reason})` : ''}`);
        if (!r.handovers.length) console.log('no handovers yet');
        if (r.trafficEnded !== undefined) console.log(`traffic: ${r.trafficEnded.note}`);
        for (const t of r.traffic ?? []) console.log(`traffic: sent ${t.sent}, delivered ${t.delivered}, lost ${t.lost}, reordered ${t.reordered}, duplicated ${t.duplicated}, ${stampText(t)}`);
        for (const l of dropCountersText(r.drops)) console.log(l);
      });
    });
}

function printRules(rules: unknown[]): void {
  console.log('  id  switch  match                                      action                  packets');
  for (const x of rules as { id: number; switch: string; match: RuleMatch; action: { outPort: string; phase: number; handoverId: number }; counters: { packets: number } }[]) {
    const m = x.match;
    const ms =
      m.kind === 'exact'
        ? `exact ${m.flow.src}:${m.flow.sport} > ${m.flow.dst}:${m.flow.dport} p${m.flow.proto}`
        : `${[m.src && `src ${m.src}`, m.dst && `dst ${m.dst}`, m.sport && `sport ${m.sport}`, m.dport && `dport ${m.dport}`, m.proto && `proto ${m.proto}`, m.inPort && `from ${m.inPort}`].filter(Boolean).join(' ') || 'any'} (prio ${m.priority})`;
    const act = `${x.action.outPort}${x.action.phase ? ` [${x.action.phase === 1 ? 'PRE' : 'POST'} h${x.action.handoverId}]` : ''}`;
    console.log(`  ${String(x.id).padStart(2)}  ${x.switch.padEnd(6)}  ${ms.padEnd(41)}  ${act.padEnd(22)}  ${x.counters.packets}`);
  }
}

/** What a daemon that replaced a dead one found and did (status.recovery). */
interface RecoveryReport {
  previousDaemon: { pid: number };
  at: string;
  nodes: { node: string; how: 'adopted' | 'restarted'; pid: number }[];
  handovers: { id: number; from: string; to: string; outcome: string; reason?: string }[];
  error?: string;
  trafficEnded?: { note: string };
}

function printRecovery(name: string, pid: number, r: RecoveryReport): void {
  console.log(`lab '${name}' recovered: daemon pid ${pid} replaces pid ${r.previousDaemon.pid}`);
  console.log(`  nodes: ${r.nodes.map((n) => `${n.node} ${n.how} (pid ${n.pid})`).join(', ')}`);
  for (const h of r.handovers) console.log(`  handover ${h.id} ${h.from} → ${h.to} (in flight when the daemon died): ${h.outcome}${h.reason ? ` (${h.reason})` : ''}`);
  if (!r.handovers.length) console.log('  no handover was in flight');
  if (r.error !== undefined) console.log(`  recovering the journal failed: ${r.error}`);
  if (r.trafficEnded !== undefined) console.log(`  traffic: ${r.trafficEnded.note}`);
}

function printStatus(s: Record<string, unknown>): void {
  printRules(s['rules'] as unknown[]);
  const active = s['active'] as { id: number; step: string; from: string; to: string }[];
  console.log(active.length ? `\nhandovers in flight:\n${active.map((a) => `  ${a.id} ${a.from} → ${a.to}: ${a.step}`).join('\n')}` : '\nno handover in flight');
  const tr = s['traffic'] as ({ direction: string; running: boolean; sent: number; delivered: number; held?: number; inFlight?: number; lost: number; reordered: number; duplicated: number } & StampFields)[] | undefined;
  for (const t of tr ?? []) console.log(`traffic ${t.direction}${t.running ? '' : ' (stopped)'}: sent ${t.sent}, delivered ${t.delivered}${t.running ? `, held ${t.held ?? 0}, in flight ${t.inFlight ?? 0}` : ''}, lost ${t.lost}, reordered ${t.reordered}, duplicated ${t.duplicated}, ${stampText(t)}`);
  const ended = s['trafficEnded'] as { note: string } | undefined;
  if (ended !== undefined) console.log(`traffic: ${ended.note}`);
  const drops = s['drops'] as DropCounters | undefined;
  if (drops !== undefined) for (const l of dropCountersText(drops)) console.log(l);
  const rec = s['recovery'] as RecoveryReport | undefined;
  if (rec !== undefined) console.log(`recovered at ${rec.at} from daemon pid ${rec.previousDaemon.pid} (${rec.handovers.length} handover(s) in flight: ${rec.handovers.map((h) => `${h.id} ${h.outcome}`).join(', ') || 'none'})`);
}
