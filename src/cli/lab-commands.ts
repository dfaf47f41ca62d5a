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
import { labPaths, listLabs, processAlive, readState, type LabState } from '../lab/run-dir.js';
import { destroyLab } from '../lab/netns-lab.js';
import { bmv2Availability, Bmv2UnavailableError } from '../lab/mininet-lab.js';
import { listNetns } from '../net/iproute.js';
import type { RuleMatch } from '../dataplane/types.js';

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
  if (st === undefined || !processAlive(st.pid)) throw new LabError(`lab '${name}' is not up (sharpctl lab up${name === 'default' ? '' : ` --name ${name}`})`);
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

/** Removes a lab: asks its daemon, then removes whatever is left by prefix. */
async function labDown(name: string): Promise<{ name: string; daemon: 'stopped' | 'not running'; removedNamespaces: string[] }> {
  const p = labPaths(runDir, name);
  const st = readState(p);
  let daemon: 'stopped' | 'not running' = 'not running';
  if (st !== undefined && processAlive(st.pid)) {
    try {
      await call(p.socket, 'shutdown', undefined, undefined, 10_000);
    } catch {
      process.kill(st.pid, 'SIGTERM'); // our own daemon, found through our run directory
    }
    for (let i = 0; i < 200 && processAlive(st.pid); i++) await sleep(50);
    if (processAlive(st.pid)) process.kill(st.pid, 'SIGKILL');
    daemon = 'stopped';
  }
  const removedNamespaces = destroyLab(`sharp-${name}-`);
  rmSync(p.dir, { recursive: true, force: true });
  return { name, daemon, removedNamespaces };
}

export function addLabCommands(program: Command): void {
  const lab = program.command('lab').description('bring a lab of network namespaces up and down');

  lab
    .command('up')
    .description('build a lab from a spec (default: client — s1 — {vnf1, vnf2} — s2 — server), load and attach the programs, install its rules')
    .argument('[spec]', 'lab spec, JSON or YAML (see src/lab/spec/default.yaml)')
    .option('--name <name>', 'lab name (namespaces are sharp-<name>-*)', labName, 'default')
    .option('--instances <n>', 'VNF instances', int('--instances', 2, 8), 2)
    .addOption(new Option('--target <target>', "switches: XDP in namespaces, or BMv2 (simple_switch_grpc) in Mininet over P4Runtime (default: the spec's target, else xdp)").choices(['xdp', 'bmv2']))
    .option('--json', 'print the lab as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl lab up\n  sharpctl lab up my-lab.yaml --name lab2\n  sharpctl lab up --target bmv2\n  sharpctl lab up --instances 3 --json')
    .action(async (specFile: string | undefined, o: { name: string; instances: number; target?: 'xdp' | 'bmv2'; json?: boolean }) => {
      // every problem of the spec at once, before anything is created
      const spec = specFile === undefined ? undefined : loadSpec(specFile);
      const target = o.target ?? spec?.target ?? 'xdp';
      if (target === 'bmv2') {
        const avail = bmv2Availability();
        if (!avail.ok) throw new Bmv2UnavailableError(`target bmv2: ${avail.reason}`);
      }
      const p = labPaths(runDir, o.name);
      const st = readState(p);
      if (st !== undefined && processAlive(st.pid)) throw new LabError(`lab '${o.name}' is up already (daemon pid ${st.pid}); sharpctl lab down${o.name === 'default' ? '' : ` --name ${o.name}`} first`);
      await labDown(o.name); // leftovers of a crashed run
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
      const daemon = spawn(process.execPath, [path.join(repoRoot, 'dist/src/lab/daemon.js'), '--name', o.name, '--run-dir', runDir, '--objects', objectsDir, '--instances', String(o.instances), '--target', target, ...specArgs], {
        detached: true,
        stdio: ['ignore', log, log],
      });
      daemon.unref();
      if (!o.json) process.stderr.write(`starting lab '${o.name}' on ${target === 'bmv2' ? 'BMv2 in Mininet' : 'XDP'} (daemon pid ${daemon.pid})`);
      let state: LabState | undefined;
      for (let i = 0; i < 600; i++) {
        state = readState(p);
        if (state?.status === 'ready' || state?.status === 'failed' || !processAlive(daemon.pid!)) break;
        if (!o.json && i % 10 === 9) process.stderr.write('.');
        await sleep(50);
      }
      if (!o.json) process.stderr.write('\n');
      if (state?.status !== 'ready') {
        const why = state?.error ?? (existsSync(p.log) ? readFileSync(p.log, 'utf8').trim().split('\n').slice(-5).join('\n') : 'no log');
        await labDown(o.name);
        throw new LabError(`lab '${o.name}' did not come up: ${why}`);
      }
      const status = await call<Record<string, unknown>>(state.socket, 'status');
      out(o.json, status, () => {
        console.log(`lab '${o.name}' is up: namespaces ${state!.prefix}*`);
        printStatus(status);
      });
    });

  lab
    .command('down')
    .description('tear a lab down: stop its daemon, remove its namespaces and programs; idempotent, also after a crash')
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--all', 'every lab, and every namespace with the sharp- prefix')
    .option('--json', 'print what was removed as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl lab down\n  sharpctl lab down --all')
    .action(async (o: { name: string; all?: boolean; json?: boolean }) => {
      const names = o.all ? [...new Set([...listLabs(runDir), o.name])] : [o.name];
      const results: Awaited<ReturnType<typeof labDown>>[] = [];
      for (const n of names) results.push(await labDown(n));
      if (o.all) {
        const stray = destroyLab('sharp-');
        if (stray.length) results.push({ name: '(stray)', daemon: 'not running', removedNamespaces: stray });
      }
      out(o.json, results, () => {
        for (const r of results) console.log(`${r.name}: daemon ${r.daemon}, ${r.removedNamespaces.length} namespaces removed${r.removedNamespaces.length ? ` (${r.removedNamespaces.join(', ')})` : ''}`);
      });
    });

  lab
    .command('status')
    .description('which labs exist, their daemons and namespaces')
    .option('--name <name>', 'only this lab', labName)
    .option('--json', 'as JSON')
    .action(async (o: { name?: string; json?: boolean }) => {
      const labs = listLabs(runDir).filter((n) => o.name === undefined || n === o.name).map((n) => {
        const st = readState(labPaths(runDir, n))!;
        return { name: n, status: processAlive(st.pid) ? st.status : 'crashed (daemon gone: sharpctl lab down cleans up)', pid: st.pid, namespaces: listNetns(st.prefix) };
      });
      const known = new Set(labs.flatMap((l) => l.namespaces));
      const stray = listNetns('sharp-').filter((n) => !known.has(n));
      out(o.json, { labs, strayNamespaces: stray }, () => {
        if (!labs.length) console.log('no lab is up');
        for (const l of labs) console.log(`${l.name}: ${l.status}, daemon pid ${l.pid}, ${l.namespaces.length} namespaces`);
        if (stray.length) console.log(`stray namespaces (sharpctl lab down --all removes them): ${stray.join(', ')}`);
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
    .option('--priority <n>', 'wildcard priority (higher wins; exact rules always win)', int('--priority', 0, 65535), 0)
    .option('--exact', 'an exact 5-tuple rule (needs --src --dst --sport --dport --proto)')
    .option('--id <id>', 'rule id (default: the next free one)', int('--id', 1, 4095))
    .option('--name <name>', 'lab name', labName, 'default')
    .option('--json', 'print the rule as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl rule add --switch s1 --exact --src 10.0.0.1 --dst 10.0.0.2 --sport 20000 --dport 9000 --proto udp --to vnf2\n  sharpctl rule add --switch s1 --dst 10.0.0.0/24 --from client --priority 20 --to vnf2')
    .action(async (o: { switch: string; to: string; src?: string; dst?: string; sport?: number; dport?: number; proto?: string; from?: string; priority: number; exact?: boolean; id?: number; name: string; json?: boolean }) => {
      const proto = o.proto === undefined ? undefined : ({ udp: 17, tcp: 6, icmp: 1 } as const)[o.proto as 'udp' | 'tcp' | 'icmp'];
      let match: RuleMatch;
      if (o.exact) {
        const missing = (['src', 'dst', 'sport', 'dport', 'proto'] as const).filter((k) => o[k] === undefined);
        if (missing.length) throw usage(`--exact needs ${missing.map((m) => `--${m}`).join(', ')}`);
        if (o.src!.includes('/') || o.dst!.includes('/')) throw usage('--exact takes addresses, not prefixes');
        match = { kind: 'exact', flow: { src: o.src!, dst: o.dst!, sport: o.sport!, dport: o.dport!, proto: proto! } };
      } else {
        match = {
          kind: 'wildcard',
          priority: o.priority,
          ...(o.src === undefined ? {} : { src: o.src }),
          ...(o.dst === undefined ? {} : { dst: o.dst }),
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
      const r = await call<{ direction: string; sent: number; delivered: number; lost: number; reordered: number; duplicated: number; stampMismatches: number }[]>(liveLab(o.name).socket, 'traffic.stop');
      out(o.json, r, () => {
        for (const d of r) console.log(`${d.direction}: sent ${d.sent}, delivered ${d.delivered}, lost ${d.lost}, reordered ${d.reordered}, duplicated ${d.duplicated}, stamp mismatches ${d.stampMismatches}`);
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
  const tr = s['traffic'] as { direction: string; running: boolean; sent: number; delivered: number; lost: number; reordered: number; duplicated: number }[] | undefined;
  for (const t of tr ?? []) console.log(`traffic ${t.direction}${t.running ? '' : ' (stopped)'}: sent ${t.sent}, delivered ${t.delivered}, lost ${t.lost}, reordered ${t.reordered}, duplicated ${t.duplicated}`);
}
