#!/usr/bin/env node
/**
 * sharpctl — seamless, zero-buffer handovers of live flows between stateful
 * network functions.
 *
 * Exit codes: 0 success; 1 the operation ran but failed (a handover aborted,
 * packets lost); 2 bad usage or input; 3 the machine cannot run it (not root,
 * missing tool or kernel feature); 130 interrupted.
 */
// What a command runs is imported in its action (await import()): every
// start, --help included, loads only commander and the commands' definitions.
import { Command, CommanderError, Option } from './commander.js';
import path from 'node:path';
import type { DemoReport } from '../demo/demo.js';
import { objectsDir } from './paths.js';
import { addLabCommands } from './lab-commands.js';
import { addNodeCommands } from './node-commands.js';
import { addDeployCommands } from './deploy-commands.js';
import { addCertsCommands } from './certs-commands.js';
import { addCaptureCommands } from './capture-commands.js';
import { EXPERIMENTS, type ExperimentName } from '../bench/experiment-names.js';
import type { ExperimentResult } from '../bench/experiments.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { EXIT, UsageError, exitCodeOf, requireRoot } from './errors.js';
import { int } from './options.js';
import { installInterruptHandling, interruptExitCode, interruption, tidying } from './interrupt.js';

export { EXIT };

/** Progress lines go to stderr, so stdout stays clean for --json. */
function progress(json: boolean): (line: string) => void {
  const t0 = Date.now();
  return (line) => {
    if (!json || process.env['SHARPCTL_PROGRESS'] === '1') process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${line}\n`);
  };
}

function printDemo(r: DemoReport): void {
  const rows: [string, string | number][] = [
    ['packets sent', r.sent],
    ['delivered', r.delivered],
    ['lost', r.lost],
    ['  counted (reason known)', r.reported],
    ['  unaccounted', r.unaccounted],
    ['reordered', r.reordered],
    ['duplicated', r.duplicated],
    ['VNF stamp mismatches', r.stampMismatches],
    ['controller data bytes', r.controllerDataBytes],
    ['controller buffer peak', `${r.controllerBufferPeakBytes} bytes (${r.mode})`],
    ['held in kernel rings', r.held],
    ['released in order', r.released],
    ['one-way latency median / p99', `${(r.latencyUs.median / 1000).toFixed(3)} / ${(r.latencyUs.p99 / 1000).toFixed(1)} ms`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  console.log('\nsummary');
  for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
  console.log('\nhandovers');
  console.log('   #  from → to       outcome     duration  state delay  held  released');
  r.handovers.forEach((h, i) =>
    console.log(
      `  ${String(i + 1).padStart(2)}  ${`${h.from} → ${h.to}`.padEnd(14)}  ${h.outcome.padEnd(10)}  ${`${h.durationMs.toFixed(1)} ms`.padStart(9)}  ${`${h.stateDelayMs} ms`.padStart(11)}  ${String(h.held).padStart(4)}  ${String(h.released).padStart(8)}${h.reason ? `  ${h.reason}` : ''}`,
    ),
  );
  console.log(`\nreport:   ${path.relative(process.cwd(), r.files.report)}\ntimeline: ${path.relative(process.cwd(), r.files.timeline)}`);
}

export function buildProgram(): Command {
  const program = new Command('sharpctl')
    .description('Seamless, zero-buffer handovers of live flows between stateful network functions (SHarP on XDP)')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText(
      'after',
      `
Exit codes: 0 success, 1 the operation failed, 2 bad usage or an invalid spec,
3 the machine cannot run it (not root, a tool missing), 130 interrupted.

Examples:
  sharpctl demo                                  # everything in one go, as root
  sharpctl lab up && sharpctl traffic start --reverse && sharpctl handover 1,3 --to vnf2
  sharpctl handover --help                       # every command has --help with examples`,
    );

  program
    .command('demo')
    .description('bring up the default lab, run traffic, hand the flows over back and forth, report, tear down')
    .option('--rate <pps>', 'probe packets per second, per direction (default: 1000; 300 on bmv2, a software switch)', int('--rate', 1, 2_000_000))
    .option('--handovers <n>', 'handovers to perform', int('--handovers', 0, 1000), 6)
    .option('--state-delay <ms>', 'injected state-transfer delay per handover', int('--state-delay', 0, 60_000), 200)
    .option('--duration <s>', 'seconds of traffic (default: long enough for the handovers)', int('--duration', 1, 3600))
    .option('--flows <n>', 'flows per direction', int('--flows', 1, 4096), 4)
    .addOption(new Option('--target <target>', 'data plane').choices(['xdp', 'bmv2']).default('xdp'))
    .addOption(new Option('--mode <mode>', 'sharp (zero controller buffer) or the controller-buffer baseline').choices(['sharp', 'controller-buffer']).default('sharp'))
    .addOption(new Option('--state <backend>', 'how VNF state moves: the example VNF maps copied in the kernel (vnf-map), E-State peers over gRPC, a Redis server, or a direct TCP copy').choices(['vnf-map', 'estate', 'redis', 'copy']).default('vnf-map'))
    .option('--out <dir>', 'where the JSON report and the SVG timeline go', 'results/demo')
    .option('--json', 'print the report as JSON on stdout')
    .addHelpText(
      'after',
      `
Examples:
  sharpctl demo                                  # 6 handovers at 1000 pps, 200 ms state delay
  sharpctl demo --rate 50000 --handovers 20 --state-delay 1000
  sharpctl demo --state estate                   # state moves between E-State peers over gRPC
  sharpctl demo --mode controller-buffer         # the baseline SHarP replaced
  sharpctl demo --target bmv2                    # the same on BMv2 switches in Mininet, over P4Runtime
  sharpctl demo --json --out /tmp/demo | jq .lost`,
    )
    .action(async (o: { rate?: number; handovers: number; stateDelay: number; duration?: number; flows: number; target: 'xdp' | 'bmv2'; mode: 'sharp' | 'controller-buffer'; state: 'vnf-map' | 'estate' | 'redis' | 'copy'; out: string; json?: boolean }) => {
      requireRoot('sharpctl demo');
      const { runDemo } = await import('../demo/demo.js');
      const report = await tidying('finishing the handover in flight and tearing the lab down', () =>
        runDemo({
          rate: o.rate ?? (o.target === 'bmv2' ? 300 : 1000),
          handovers: o.handovers,
          stateDelayMs: o.stateDelay,
          ...(o.duration === undefined ? {} : { durationS: o.duration }),
          flows: o.flows,
          target: o.target,
          mode: o.mode,
          state: o.state,
          outDir: path.resolve(o.out),
          objectsDir,
          progress: progress(o.json === true),
          signal: interruption,
        }),
      );
      if (o.json) console.log(JSON.stringify(report, null, 2));
      else printDemo(report);
      if (interruption.aborted) process.exitCode = interruptExitCode() ?? EXIT.INTERRUPTED;
      else if (report.lost + report.reordered + report.duplicated + report.stampMismatches > 0 || report.handovers.some((h) => h.outcome !== 'completed')) process.exitCode = EXIT.FAILED;
    });

  program
    .command('compile')
    .description('build the data-plane programs (clang for XDP; p4c for BMv2 when installed)')
    .addOption(new Option('--target <target>', 'data plane').choices(['xdp', 'bmv2']).default('xdp'))
    .option('--force', 'rebuild everything')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `\nExamples:\n  sharpctl compile\n  sharpctl compile --force --json\n  sharpctl compile --target bmv2        # checks p4/build against the P4 sources; p4c rebuilds it`)
    .action(async (o: { target: 'xdp' | 'bmv2'; force?: boolean; json?: boolean }) => {
      const { compileXdp, compileBmv2 } = await import('./compile.js');
      const r = o.target === 'xdp' ? compileXdp(o.force === true) : compileBmv2(o.force === true);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else {
        for (const b of r.built) console.log(`built       ${path.join(r.dir, b)}`);
        for (const b of r.upToDate) console.log(`up to date  ${path.join(r.dir, b)}`);
        if (r.note) console.log(r.note);
      }
    });

  program
    .command('bench')
    .description("reproduce the SHarP paper's evaluation against the controller-buffer baseline")
    .argument('<experiment>', `one of: ${EXPERIMENTS.join(', ')}`)
    .option('--quick', 'fewer points and repetitions (about a minute)')
    .option('--handovers <n>', 'soak: handovers in all (default 10000, --quick 200)', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 2) throw new UsageError(`--handovers must be an integer ≥ 2, not '${v}'`);
      return n;
    })
    .option('--out <dir>', 'where the JSON and SVG plots go', 'results')
    .option('--json', 'print {experiment, rows} as JSON on stdout')
    .addHelpText(
      'after',
      `
Experiments:
  buffer      controller buffer peak vs state-transfer delay (0 … 5000 ms), both modes
  rate        loss / reordering / duplication vs offered rate, both modes
  duration    handover duration vs state-transfer delay, both modes
  forwarding  switch forwarding rate with and without marking vs a bare XDP redirect
  wildcard    time to move a wildcard rule carrying 1, 10, 100, 1000 flows
  soak        N handovers (two flows' rules concurrently, both directions, state delays 0–50 ms):
              0 lost/reordered/duplicated, held = released, flat memory, no leaked fds or BPF objects

Examples:
  sharpctl bench buffer --quick
  sharpctl bench rate --json | jq '.rows[] | select(.lost > 0)'
  sharpctl bench soak --handovers 10000`,
    )
    .action(async (name: string, o: { quick?: boolean; out: string; json?: boolean; handovers?: number }) => {
      if (!(EXPERIMENTS as readonly string[]).includes(name)) throw new UsageError(`unknown experiment '${name}' (experiments: ${EXPERIMENTS.join(', ')})`);
      requireRoot('sharpctl bench');
      const { runExperiment, machine } = await import('../bench/experiments.js');
      const { destroyLab } = await import('../lab/netns-lab.js');
      const say = progress(o.json === true);
      say(`${name}${o.quick ? ' (quick)' : ''} on ${machine()}`);
      // the experiments cannot be stopped halfway: an interruption removes their namespaces and ends the run
      const prefix = `sharp-exp${process.pid}`;
      const r = await tidying("removing the benchmark's namespaces", () =>
        new Promise<ExperimentResult>((resolve, reject) => {
          const stop = (): void => {
            destroyLab(`${prefix}-`);
            destroyLab(`sharp-bench-${process.pid}-`); // the forwarding benchmark's own
            reject(interruption.reason as Error);
          };
          interruption.addEventListener('abort', stop, { once: true });
          runExperiment(name as ExperimentName, { objectsDir, quick: o.quick === true, progress: say, prefix, ...(o.handovers === undefined ? {} : { handovers: o.handovers }) })
            .then(resolve, (e: unknown) => reject(e instanceof Error ? e : new Error(String(e))))
            .finally(() => interruption.removeEventListener('abort', stop));
        }),
      );
      // a row that says it is not clean (the soak's) fails the command
      if (r.rows.some((row) => row['clean'] === false)) process.exitCode = EXIT.FAILED;
      const dir = path.resolve(o.out, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ experiment: r.experiment, machine: r.machine, rows: r.rows }, null, 2) + '\n');
      for (const [file, svg] of Object.entries(r.plots)) writeFileSync(path.join(dir, file), svg);
      if (o.json) console.log(JSON.stringify({ experiment: r.experiment, machine: r.machine, rows: r.rows }, null, 2));
      else {
        console.log(`${name} — ${r.machine}`);
        // compact: the spread columns stay in the JSON
        console.table(r.rows.map((row) => Object.fromEntries(Object.entries(row).filter(([k]) => !/Min$|Max$|^repetitions$|^stampMismatches$/.test(k)))));
        console.log(`written: ${path.relative(process.cwd(), dir)}/`);
      }
    });

  addLabCommands(program);
  addNodeCommands(program);
  addDeployCommands(program);
  addCertsCommands(program);
  addCaptureCommands(program);
  return program;
}

/** commander's own errors ("error: unknown option '--x'") as a UsageError */
function commanderUsage(e: CommanderError): UsageError {
  return new UsageError(e.message.replace(/^error: /, ''), { cause: e });
}

export async function main(argv: readonly string[]): Promise<number> {
  installInterruptHandling();
  const json = argv.slice(2).includes('--json');
  const program = buildProgram();
  let code: number;
  try {
    await program.parseAsync(argv as string[]);
    code = Number(process.exitCode ?? EXIT.OK);
  } catch (e) {
    let err = e instanceof Error ? e : new Error(String(e));
    if (e instanceof CommanderError) {
      // help and version are no failure; help shown for a missing subcommand is
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || (e.code === 'commander.help' && e.exitCode === 0)) return EXIT.OK;
      err = e.code === 'commander.help' ? new UsageError('a subcommand is missing (see the list above)', { cause: e }) : commanderUsage(e);
      // commander has said it on stderr already
      if (json) console.log(JSON.stringify({ error: { name: err.name, message: err.message } }));
      return EXIT.USAGE;
    }
    code = interruptExitCode() ?? exitCodeOf(err);
    if (json) console.log(JSON.stringify({ error: { name: err.name, message: err.message } }));
    process.stderr.write(`sharpctl: ${err.message}\n`);
    return code;
  }
  // a Ctrl-C that arrived during a synchronous step is seen now
  await new Promise((r) => setImmediate(r));
  return interruptExitCode() ?? code;
}

const code = await main(process.argv);
process.exitCode = code;
// nothing of an interrupted command may keep the process alive
if (code === EXIT.INTERRUPTED || code === EXIT.TERMINATED) process.exit(code);
