/**
 * Commands that drive a running lab through its daemon: lab up/down/status,
 * rule, handover, status, traffic, report.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadSpec } from '../lab/spec/index.js';
import path from 'node:path';
import { Command, Option } from 'commander';
import { compileXdp } from './compile.js';
import { objectsDir, repoRoot, runDir } from './paths.js';
import { call } from '../lab/rpc.js';
import {
  labPaths,
  listLabs,
  readState,
  daemonAlive,
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
import { bmv2Availability, Bmv2UnavailableError } from '../lab/mininet-lab.js';
import { listNetns, deleteNetns } from '../net/iproute.js';
import type { RuleMatch } from '../dataplane/types.js';
import { PROTO_NUMBERS } from '../lab/spec/types.js';
import { formatIpv4, networkOf, parseCidr } from '../lab/spec/util.js';

export class LabError extends Error {
  override name = 'LabError';
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const out = (json: boolean | undefined, value: unknown, human: () => void): void => {
  if (json) console.log(JSON.stringify(value, null, 2));
  else human();
};

function liveLab(name: string): LabState {
  const st = readState(labPaths(runDir, name));
  if (st === undefined || !daemonAlive(st)) throw new LabError(`lab '${name}' is not up (sharpctl lab up${name === 'default' ? '' : ` --name ${name}`})`);
  if (st.status !== 'ready') throw new LabError(`lab '${name}' is ${st.status}${st.error ? `: ${st.error}` : ''}`);
  return st;
}

function int(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      const e = new Error(`${name} must be an integer from ${min} to ${max}, got '${v}'`);
      e.name = 'UsageError';
      throw e;
    }
    return n;
  };
}

function usage(message: string): Error {
  const e = new Error(message);
  e.name = 'UsageError';
  return e;
}

const NAME = /^[a-z][a-z0-9]{0,9}$/;
function labName(v: string): string {
  if (!NAME.test(v)) throw usage(`--name must be 1-10 lowercase letters and digits starting with a letter, got '${v}'`);
  return v;
}

/** The lab a spec names, when --name does not name one. */
function specLabName(specName: string, file: string): string {
  if (NAME.test(specName)) return specName;
  throw usage(
    `the spec ${file} is named '${specName}', which cannot name a lab (1-10 lowercase letters and digits starting with a letter: its namespaces are sharp-<name>-<node>); give the lab a name with --name`,
  );
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

/** Stops a running daemon: asks it, then SIGTERM, then SIGKILL — each only while it is still the very same process. */
async function stopDaemon(p: LabPaths, st: LabState): Promise<void> {
  try {
    await call(p.socket, 'shutdown', undefined, undefined, 10_000);
  } catch {
    if (daemonAlive(st)) process.kill(st.pid, 'SIGTERM'); // our own daemon, found through our run directory
  }
  for (let i = 0; i < 200 && daemonAlive(st); i++) await sleep(50);
  if (daemonAlive(st)) process.kill(st.pid, 'SIGKILL');
  for (let i = 0; i < 100 && daemonAlive(st); i++) await sleep(50);
}

/**
 * Removes what a lab left (call with the lab's lock held, its daemon gone):
 * the processes of the dead daemon's session, the namespaces with its
 * prefix that nobody running owns, its run directory.
 */
async function removeLeftovers(name: string, p: LabPaths, st: LabState | undefined): Promise<Omit<DownResult, 'name' | 'daemon'>> {
  const stopped = st === undefined ? [] : (await stopSessionLeftovers(st)).map((x) => `${x.comm} (pid ${x.pid})`);
  const daemons = liveDaemons();
  const all = listNetns(`sharp-${name}-`);
  const kept = all.filter((ns) => namespaceOwner(ns, daemons) !== undefined);
  const removedNamespaces = all.filter((ns) => !kept.includes(ns));
  for (const ns of removedNamespaces) deleteNetns(ns);
  rmSync(p.dir, { recursive: true, force: true });
  return { removedNamespaces, ...(stopped.length ? { stoppedProcesses: stopped } : {}), ...(kept.length ? { keptNamespaces: kept } : {}) };
}

/** Removes a lab: asks its daemon to stop, then (holding the lab's lock) removes whatever is left. */
async function labDown(name: string): Promise<DownResult> {
  const p = labPaths(runDir, name);
  const st = readState(p);
  let daemon: 'stopped' | 'not running' = 'not running';
  if (st !== undefined && daemonAlive(st)) {
    await stopDaemon(p, st);
    daemon = 'stopped';
  }
  const lock = await lockLab(runDir, name, 20_000);
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

/** Checks a --src/--dst value: an address or a prefix without host bits. */
function prefixOption(flag: string, v: string | undefined, exact: boolean): string | undefined {
  if (v === undefined) return undefined;
  const c = parseCidr(v);
  if (c === undefined) throw usage(`${flag}: '${v}' is not an IPv4 ${exact ? 'address (like 10.0.0.1)' : 'address or prefix (like 10.0.0.1 or 10.0.0.0/24)'}`);
  if (exact) {
    if (c.len !== undefined) throw usage('--exact takes addresses, not prefixes');
    return v;
  }
  const len = c.len ?? 32;
  const net = networkOf(c.addr, len);
  if (net !== c.addr) throw usage(`${flag}: ${v} has address bits set beyond its /${len} prefix; did you mean ${formatIpv4(net)}/${len}?`);
  return `${formatIpv4(net)}/${len}`;
}

export function addLabCommands(program: Command): void {
  const lab = program.command('lab').description('bring a lab of network namespaces up and down');

  lab
    .command('up')
    .description('build a lab from a spec (default: client — s1 — {vnf1, vnf2} — s2 — server), load and attach the programs, install its rules')
    .argument('[spec]', 'lab spec, JSON or YAML (see src/lab/spec/default.yaml)')
    .option('--name <name>', "lab name (namespaces are sharp-<name>-*; default: the spec's name, else 'default')", labName)
    .option('--instances <n>', 'VNF instances of the standard lab, 2 to 8 (default 2; a spec lists its own)', int('--instances', 2, 8))
    .addOption(new Option('--target <target>', "switches: XDP in namespaces, or BMv2 (simple_switch_grpc) in Mininet over P4Runtime (default: the spec's target, else xdp)").choices(['xdp', 'bmv2']))
    .option('--json', 'print the lab as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl lab up\n  sharpctl lab up my-lab.yaml --name lab2\n  sharpctl lab up --target bmv2\n  sharpctl lab up --instances 3 --json')
    .action(async (specFile: string | undefined, o: { name?: string; instances?: number; target?: 'xdp' | 'bmv2'; json?: boolean }) => {
      // every problem of the spec at once, before anything is created
      const spec = specFile === undefined ? undefined : loadSpec(specFile);
      if (spec !== undefined && o.instances !== undefined) {
        throw usage(`--instances sizes the standard lab; the spec ${specFile} lists its VNFs itself (vnfs:). Leave out --instances, or the spec`);
      }
      const name = o.name ?? (spec === undefined ? 'default' : specLabName(spec.name, specFile!));
      if (spec !== undefined && o.name !== undefined && o.name !== spec.name && !o.json) process.stderr.write(`lab named '${o.name}' (--name), not '${spec.name}' (the spec's name)\n`);
      const target = o.target ?? spec?.target ?? 'xdp';
      if (target === 'bmv2') {
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
        const elsewhere = liveDaemons().find((d) => d.name === name);
        if (elsewhere !== undefined) {
          throw new LabError(`a lab named '${name}' runs from another run directory (${elsewhere.runDir}, daemon pid ${elsewhere.pid}); its namespaces would be the same: choose another --name`);
        }
        await removeLeftovers(name, p, st); // of a crashed run
        const compiled = compileXdp();
        if (compiled.built.length && !o.json) process.stderr.write(`compiled ${compiled.built.join(', ')}\n`);
        mkdirSync(p.dir, { recursive: true });
        const log = openSync(p.log, 'a');
        const specArgs: string[] = [];
        if (spec !== undefined) {
          const specJson = path.join(p.dir, 'spec.json');
          writeFileSync(specJson, JSON.stringify(spec, null, 2) + '\n');
          specArgs.push('--spec', specJson);
        }
        const daemon = spawn(
          process.execPath,
          [path.join(repoRoot, 'dist/src/lab/daemon.js'), '--name', name, '--run-dir', runDir, '--objects', objectsDir, '--instances', String(o.instances ?? 2), '--target', target, '--lock-fd', '3', ...specArgs],
          { detached: true, stdio: ['ignore', log, log, lock.fd] },
        );
        daemon.unref();
        if (!o.json) process.stderr.write(`starting lab '${name}' on ${target === 'bmv2' ? 'BMv2 in Mininet' : 'XDP'} (daemon pid ${daemon.pid})`);
        let state: LabState | undefined;
        for (let i = 0; i < 600; i++) {
          state = readState(p);
          if (state?.status === 'ready' || state?.status === 'failed' || !sameProcess(daemon.pid!, undefined)) break;
          if (!o.json && i % 10 === 9) process.stderr.write('.');
          await sleep(50);
        }
        if (!o.json) process.stderr.write('\n');
        if (state?.status !== 'ready') {
          const why = state?.error ?? (existsSync(p.log) ? readFileSync(p.log, 'utf8').trim().split('\n').slice(-5).join('\n') : 'no log');
          if (state !== undefined && daemonAlive(state)) await stopDaemon(p, state);
          await removeLeftovers(name, p, state);
          throw new LabError(`lab '${name}' did not come up: ${why}`);
        }
        const status = await call<Record<string, unknown>>(state.socket, 'status');
        out(o.json, status, () => {
          console.log(`lab '${name}' is up: namespaces ${state!.prefix}*`);
          printStatus(status);
        });
      } finally {
        lock.release(); // our descriptor; the daemon's stays open
      }
    });

  lab
    .command('down')
    .description('tear a lab down: stop its daemon and every process it started, remove its namespaces and programs; idempotent, also after a crash')
    .option('--name <name>', 'lab name', labName, 'default')
    .addOption(new Option('--all', "every lab of this run directory, and every stray namespace (one no running lab, demo or benchmark owns)").conflicts('name'))
    .addOption(new Option('--stray', 'only the stray namespaces: sharp-* namespaces no running lab (of any run directory), demo or benchmark owns').conflicts(['name', 'all']))
    .option('--json', 'print what was removed as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl lab down\n  sharpctl lab down --name lab2\n  sharpctl lab down --stray\n  sharpctl lab down --all')
    .action(async (o: { name: string; all?: boolean; stray?: boolean; json?: boolean }) => {
      const names = o.stray ? [] : o.all ? listLabs(runDir) : [o.name];
      const results: DownResult[] = [];
      for (const n of names) results.push(await labDown(n));
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
    .command('status')
    .description('which labs exist, their daemons and namespaces (degraded: a namespace of a running lab is gone); stray namespaces')
    .option('--name <name>', 'only this lab', labName)
    .option('--json', 'as JSON')
    .action(async (o: { name?: string; json?: boolean }) => {
      const all = listLabs(runDir).map((n) => {
        const st = readState(labPaths(runDir, n))!;
        const alive = daemonAlive(st);
        const namespaces = listNetns(st.prefix);
        const missingNamespaces = alive && st.status === 'ready' ? st.namespaces.filter((ns) => !namespaces.includes(ns)) : [];
        const status = !alive ? 'crashed (daemon gone: sharpctl lab down cleans up)' : missingNamespaces.length ? 'degraded' : st.status;
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

  const rule = program.command('rule').description('switch rules of the running lab');
  rule
    .command('list')
    .description('rules with their actions and counters')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .action(async (o: { name: string; json?: boolean }) => {
      const rules = await call<unknown[]>(liveLab(o.name).socket, 'rule.list');
      out(o.json, rules, () => printRules(rules));
    });
  rule
    .command('add')
    .description('add a rule: exact (a whole 5-tuple) or wildcard (any subset of fields, with a priority)')
    .requiredOption('--switch <switch>', 'switch name, e.g. s1')
    .requiredOption('--to <node>', 'where matching packets go: a neighbour node (vnf2, client) or a port name (s1-vnf2)')
    .option('--src <cidr>', 'source address or prefix')
    .option('--dst <cidr>', 'destination address or prefix')
    .option('--sport <port>', 'source port', int('--sport', 0, 65535))
    .option('--dport <port>', 'destination port', int('--dport', 0, 65535))
    .addOption(new Option('--proto <proto>', 'IP protocol').choices(['udp', 'tcp', 'icmp']))
    .option('--from <node>', 'ingress: only packets arriving from this neighbour')
    .option('--priority <n>', 'wildcard priority (higher wins; exact rules always win; default 0)', int('--priority', 0, 65535))
    .option('--exact', 'an exact 5-tuple rule (needs --src --dst --sport --dport --proto; no --priority, no --from)')
    .option('--id <id>', 'rule id (default: the lowest free one)', int('--id', 1, 4095))
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'print the rule as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl rule add --switch s1 --exact --src 10.0.0.1 --dst 10.0.0.2 --sport 20000 --dport 9000 --proto udp --to vnf2\n  sharpctl rule add --switch s1 --dst 10.0.0.0/24 --from client --priority 20 --to vnf2')
    .action(async (o: { switch: string; to: string; src?: string; dst?: string; sport?: number; dport?: number; proto?: string; from?: string; priority?: number; exact?: boolean; id?: number; name: string; json?: boolean }) => {
      const proto = o.proto === undefined ? undefined : PROTO_NUMBERS[o.proto as 'udp' | 'tcp' | 'icmp'];
      if (proto !== undefined && proto !== PROTO_NUMBERS.udp && proto !== PROTO_NUMBERS.tcp) {
        const ports = (['sport', 'dport'] as const).filter((k) => (o[k] ?? 0) !== 0);
        if (ports.length) throw usage(`ports exist only for tcp and udp: the switch sees port 0 in ${o.proto} packets, so this rule could never match (${ports.map((k) => `--${k} ${o[k]}`).join(', ')})`);
      }
      let match: RuleMatch;
      if (o.exact) {
        const missing = (['src', 'dst', 'sport', 'dport', 'proto'] as const).filter((k) => o[k] === undefined);
        if (missing.length) throw usage(`--exact needs ${missing.map((m) => `--${m}`).join(', ')}`);
        if (o.priority !== undefined) throw usage('--priority is for wildcard rules: an exact rule always wins over every wildcard rule, whatever its priority');
        if (o.from !== undefined) throw usage('--from is for wildcard rules: an exact rule matches its 5-tuple from every ingress port (the exact table has no ingress field)');
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
      const r = await call<{ id: number }>(liveLab(o.name).socket, 'rule.add', { switch: o.switch, to: o.to, match, ...(o.id === undefined ? {} : { id: o.id }) });
      out(o.json, r, () => console.log(`rule ${r.id} added`));
    });
  rule
    .command('del')
    .description('delete a rule')
    .argument('<id>', 'rule id', int('rule id', 1, 4095))
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .action(async (id: number, o: { name: string; json?: boolean }) => {
      const r = await call(liveLab(o.name).socket, 'rule.del', { id });
      out(o.json, r, () => console.log(`rule ${id} deleted`));
    });

  program
    .command('handover')
    .description('move the traffic of rules from one VNF instance to another: lossless, in order, no controller buffer')
    .argument('<rules>', "rule ids, comma separated (e.g. 1,3), or 'all' with --from")
    .requiredOption('--to <vnf>', 'the instance to move to')
    .option('--from <vnf>', 'the instance to move from (default: where the first rule sends)')
    .option('--state-delay <ms>', 'injected state-transfer delay', int('--state-delay', 0, 600_000), 0)
    .option('--timeout <ms>', 'give up (and roll back) after this long', int('--timeout', 100, 3_600_000))
    .addOption(new Option('--mode <mode>', 'sharp (zero controller buffer) or the controller-buffer baseline').choices(['sharp', 'controller-buffer']).default('sharp'))
    .addOption(new Option('--state <backend>', "how VNF state moves (default: the lab spec's state)").choices(['vnf-map', 'estate', 'redis', 'copy']))
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl handover 1,3 --to vnf2\n  sharpctl handover all --from vnf2 --to vnf1 --state-delay 500')
    .action(async (spec: string, o: { to: string; from?: string; stateDelay: number; timeout?: number; mode: string; state?: string; name: string; json?: boolean }) => {
      let rules: number[] | 'all';
      if (spec === 'all') rules = 'all';
      else {
        rules = spec.split(',').map((x) => int('rule id', 1, 4095)(x.trim()));
      }
      const t0 = Date.now();
      const r = await call<{ outcome: string; reason?: string; durationMs: number; id: number; from: string; to: string }>(
        liveLab(o.name).socket,
        'handover',
        { rules, to: o.to, stateDelayMs: o.stateDelay, mode: o.mode, ...(o.state === undefined ? {} : { state: o.state }), ...(o.from === undefined ? {} : { from: o.from }), ...(o.timeout === undefined ? {} : { timeoutMs: o.timeout }) },
        (ev) => {
          const e = ev as { step: string; t: number; detail?: string };
          if (!o.json) process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(2).padStart(6)}s] ${e.step}${e.detail ? `: ${e.detail}` : ''}\n`);
        },
      );
      out(o.json, r, () => console.log(`handover ${r.id} ${r.from} → ${r.to}: ${r.outcome} in ${r.durationMs.toFixed(1)} ms${r.reason ? ` (${r.reason})` : ''}`));
      if (r.outcome !== 'completed') process.exitCode = 1;
    });

  program
    .command('status')
    .description('rules, handovers in flight with their phase, counters, traffic')
    .option('--watch [seconds]', 'refresh every N seconds (default 1) until Ctrl-C')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .action(async (o: { watch?: string | boolean; name: string; json?: boolean }) => {
      const st = liveLab(o.name);
      const every = o.watch === undefined ? 0 : o.watch === true ? 1 : Number(o.watch);
      if (o.watch !== undefined && !(every > 0)) throw usage(`--watch takes a number of seconds, got '${String(o.watch)}'`);
      let stop = false;
      process.once('SIGINT', () => (stop = true));
      do {
        const s = await call<Record<string, unknown>>(st.socket, 'status');
        if (o.json) console.log(JSON.stringify(s));
        else {
          if (every) process.stdout.write('\x1b[2J\x1b[H');
          printStatus(s);
        }
        if (every) await sleep(every * 1000);
      } while (every && !stop);
    });

  const traffic = program.command('traffic').description('probe traffic generator and sink in the running lab');
  traffic
    .command('start')
    .description('start probes client → server (and back with --reverse): per-flow sequence numbers, any rate')
    .option('--rate <pps>', 'packets per second per direction', int('--rate', 1, 2_000_000), 1000)
    .option('--flows <n>', 'flows', int('--flows', 1, 4096), 4)
    .option('--reverse', 'also server → client')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl traffic start --rate 20000 --flows 16 --reverse')
    .action(async (o: { rate: number; flows: number; reverse?: boolean; name: string; json?: boolean }) => {
      const r = await call(liveLab(o.name).socket, 'traffic.start', { rate: o.rate, flows: o.flows, reverse: o.reverse === true });
      out(o.json, r, () => console.log(`traffic started: ${o.flows} flows at ${o.rate} pps${o.reverse ? ', both directions' : ''}`));
    });
  traffic
    .command('stop')
    .description('stop the probes and report lost, reordered, duplicated packets and VNF stamp mismatches')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .action(async (o: { name: string; json?: boolean }) => {
      const r = await call<{ direction: string; sent: number; delivered: number; lost: number; reported?: number; unaccounted?: number; reordered: number; duplicated: number; stampMismatches: number }[]>(liveLab(o.name).socket, 'traffic.stop');
      out(o.json, r, () => {
        for (const d of r) console.log(`${d.direction}: sent ${d.sent}, delivered ${d.delivered}, lost ${d.lost}${d.lost > 0 ? ` (counted ${d.reported ?? 0}, unaccounted ${d.unaccounted ?? d.lost})` : ''}, reordered ${d.reordered}, duplicated ${d.duplicated}, stamp mismatches ${d.stampMismatches}`);
      });
      if (r.some((d) => d.lost + d.reordered + d.duplicated + d.stampMismatches > 0)) process.exitCode = 1;
    });

  program
    .command('report')
    .description('handovers done in this lab and the traffic numbers')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'as JSON')
    .action(async (o: { name: string; json?: boolean }) => {
      const r = await call<{ handovers: { id: number; from: string; to: string; outcome: string; durationMs: number; reason?: string }[]; traffic?: { sent: number; delivered: number; lost: number; reordered: number; duplicated: number }[] }>(liveLab(o.name).socket, 'report');
      out(o.json, r, () => {
        for (const h of r.handovers) console.log(`handover ${h.id} ${h.from} → ${h.to}: ${h.outcome} in ${h.durationMs} ms${h.reason ? ` (${h.reason})` : ''}`);
        for (const t of r.traffic ?? []) console.log(`traffic: sent ${t.sent}, delivered ${t.delivered}, lost ${t.lost}, reordered ${t.reordered}, duplicated ${t.duplicated}`);
        if (!r.handovers.length) console.log('no handovers yet');
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

function printStatus(s: Record<string, unknown>): void {
  printRules(s['rules'] as unknown[]);
  const active = s['active'] as { id: number; step: string; from: string; to: string }[];
  console.log(active.length ? `\nhandovers in flight:\n${active.map((a) => `  ${a.id} ${a.from} → ${a.to}: ${a.step}`).join('\n')}` : '\nno handover in flight');
  const tr = s['traffic'] as { direction: string; running: boolean; sent: number; delivered: number; held?: number; inFlight?: number; lost: number; reordered: number; duplicated: number }[] | undefined;
  for (const t of tr ?? []) console.log(`traffic ${t.direction}${t.running ? '' : ' (stopped)'}: sent ${t.sent}, delivered ${t.delivered}${t.running ? `, held ${t.held ?? 0}, in flight ${t.inFlight ?? 0}` : ''}, lost ${t.lost}, reordered ${t.reordered}, duplicated ${t.duplicated}`);
}
