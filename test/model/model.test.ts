// The Promela model of the SHarP handover (test/model/sharp.pml), checked
// with spin: a bounded exhaustive verification of its properties, the tie
// between its steps and the engine's, and proof that the check can fail —
// removing any one guard of the protocol makes spin report an error whose
// trail shows the lost or reordered frame.
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/env.js';

// spin's searches are CPU-bound: with the quiescence event and the timed
// model both verified, the file needs more than the suite's 300 s on a
// loaded 2-core box
t.setTimeout(900_000);

const MODEL = path.join(repoRoot, 'test/model/sharp.pml');
const model = readFileSync(MODEL, 'utf8');
/** the model without its preprocessor lines (macro definitions mention ENTER(s)) */
const modelCode = model
  .split('\n')
  .map((l) => (/^\s*#/.test(l) ? '' : l))
  .join('\n');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? new Error(`${cmd} is not installed: run \`make deps\` (it installs Debian's ${cmd === 'spin' ? 'spin' : 'gcc'})`) : e),
    );
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Verification {
  defines: string[];
  output: string;
  errors: number;
  states: number;
  transitions: number;
  depth: number;
  seconds: number;
  memoryMb: number;
  /** source lines pan reports unreached */
  unreached: Set<number>;
  /** `spin -t` replay of the counterexample, if pan found one */
  trail?: string;
}

/**
 * spin -a, gcc, ./pan in a fresh temp dir (the pan sources, binary and trail
 * never land in the repository), with the model's bounds and mutations as
 * cpp defines.
 */
async function verify(defines: string[]): Promise<Verification> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sharp-model-'));
  try {
    copyFileSync(MODEL, path.join(dir, 'sharp.pml'));
    const d = defines.map((x) => `-D${x}`);
    const gen = await run('spin', ['-a', ...d, 'sharp.pml'], dir);
    if (gen.code !== 0) throw new Error(`spin -a ${d.join(' ')} failed:\n${gen.stdout}${gen.stderr}`);
    // -O0: at these bounds gcc -O2 costs more time than it saves the search
    const cc = await run('gcc', ['-w', '-O0', '-DSAFETY', '-o', 'pan', 'pan.c'], dir);
    if (cc.code !== 0) throw new Error(`gcc pan.c failed:\n${cc.stderr}`);
    const pan = await run('./pan', ['-m100000'], dir);
    const output = pan.stdout + pan.stderr;
    const num = (re: RegExp): number => {
      const m = re.exec(output);
      if (!m) throw new Error(`pan output has no ${re}:\n${output}`);
      return Number(m[1]);
    };
    const v: Verification = {
      defines,
      output,
      errors: num(/errors: (\d+)/),
      states: num(/(\d+) states, stored/),
      transitions: num(/(\d+) transitions/),
      depth: num(/depth reached (\d+)/),
      seconds: num(/pan: elapsed time ([\d.e+]+) seconds/),
      memoryMb: num(/([\d.]+)\s+total actual memory usage/),
      unreached: new Set([...output.matchAll(/^\s+sharp\.pml:(\d+), state \d+, /gm)].map((m) => Number(m[1]))),
    };
    if (existsSync(path.join(dir, 'sharp.pml.trail'))) v.trail = (await run('spin', ['-t', ...d, 'sharp.pml'], dir)).stdout;
    return v;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const figures = (v: Verification): string =>
  `${v.defines.join(' ') || 'defaults'}: ${v.states} states stored, ${v.transitions} transitions, depth ${v.depth}, ${v.seconds} s, ${v.memoryMb} MB`;

// ---------------------------------------------------------------- the model's steps are the engine's

/** 'pre_marking' in Promela is 'pre-marking' in the engine */
const toEngine = (s: string): string => s.replace(/_/g, '-');

/** the model's mtype of steps, in declaration order */
function modelSteps(): string[] {
  const m = /^mtype:step\s*=\s*\{([^}]*)\}/m.exec(modelCode);
  if (!m) throw new Error('sharp.pml declares no mtype:step');
  return m[1]!.split(',').map((s) => toEngine(s.trim()));
}

/** the model's ENTER(...) steps in the order they appear */
function modelSequence(): string[] {
  return [...modelCode.matchAll(/\bENTER\((\w+)\)/g)].map((m) => toEngine(m[1]!)).filter((s, i, all) => all.indexOf(s) === i);
}

/** every HandoverStep: the engine's runtime list (the type is derived from it) */
async function engineSteps(): Promise<string[]> {
  const mod = await import('../../src/handover/engine.js');
  return [...mod.HANDOVER_STEPS];
}

/**
 * The order a handover enters its steps: SHarP's sequence, its outcome, then
 * a rollback's steps. engine-fake.test.ts checks that a handover's events
 * are exactly SHARP_STEPS then 'completed', and a rolled-back one's end in
 * 'rolling-back', 'aborted'.
 */
async function engineSequence(): Promise<string[]> {
  const mod = (await import('../../src/handover/engine.js')) as { SHARP_STEPS: readonly string[] };
  return [...mod.SHARP_STEPS, 'completed', 'rolling-back', 'aborted'];
}

/** HandoverStep values the model leaves out, and why */
const NOT_MODELLED: Record<string, string> = {
  validating: 'checks the request; nothing in the data plane changes',
  diverting: "the controller-buffer baseline's step, not SHarP",
  flushing: "the controller-buffer baseline's step, not SHarP",
  failed: 'a rollback that itself fails; the model lets a rollback be interrupted only by a restart',
  lossy: "a move that lost frames (hold-ring overflow): within the verified bounds the ring never overflows; the RING=1 mutation shows the loss",
};

t.test("the model's steps are the engine's HandoverStep values, in the engine's order", async (t) => {
  const steps = modelSteps();
  const all = await engineSteps();
  t.same(steps.filter((s) => !all.includes(s)), [], 'every step of the model is a HandoverStep');
  t.same(
    all.filter((s) => !steps.includes(s) && !(s in NOT_MODELLED)),
    [],
    'every HandoverStep is in the model, or listed as not modelled with a reason',
  );
  t.same(
    Object.keys(NOT_MODELLED).filter((s) => !all.includes(s) || steps.includes(s)),
    [],
    'the not-modelled list names only HandoverSteps the model lacks',
  );
  t.same([...steps].sort(), [...modelSequence()].sort(), 'the model enters each of its steps');
  t.same(modelSequence(), (await engineSequence()).filter((s) => steps.includes(s)), "the model enters them in the order the engine's handover() does");
});

// ---------------------------------------------------------------- bounded verification

/** source lines (1-based) matching re */
const linesOf = (re: RegExp): number[] =>
  modelCode
    .split('\n')
    .map((l, i) => (re.test(l) ? i + 1 : 0))
    .filter((n) => n > 0);

function assertVerified(t: Test, v: Verification): void {
  t.equal(v.errors, 0, `spin finds no error (${figures(v)})${v.errors ? `\n${v.trail ?? v.output}` : ''}`);
  t.notMatch(v.output, /max search depth too small/, 'the search was exhaustive (not cut at the depth limit)');
  t.match(v.output, /Full statespace search/, 'a full state-space search');
  t.comment(figures(v));
}

t.test('bounded verification: 3 frames, ring of 3, one failure, one controller restart at any step', async (t) => {
  const v = await verify(['N=3', 'RING=3', 'MAX_FAILS=1', 'MAX_RESTARTS=1']);
  assertVerified(t, v);
  // not vacuous: every step, every reconciler decision, holding and the
  // direct pass after a release, and the relay of a rollback are reached
  const mustReach = [
    ...linesOf(/\bENTER\(/),
    ...linesOf(/printf\("reconcile: /),
    ...linesOf(/printf\("agent %c: frame %d held/),
    ...linesOf(/passing\[me\] = true; busy\[me\] = s/),
    ...linesOf(/printf\("VNF %c: frame %d processed/),
  ];
  t.ok(mustReach.length >= 20, `${mustReach.length} statements that must be reachable`);
  t.same(
    mustReach.filter((l) => v.unreached.has(l)).map((l) => `${l}: ${model.split('\n')[l - 1]!.trim()}`),
    [],
    'every step, reconciler decision, hold and release path is reached',
  );
  t.ok(v.states > 100_000, `a nontrivial state space (${v.states} states)`);
});

t.test('bounded verification: every wait timed (a data plane without the quiescence event, as BMv2)', async (t) => {
  assertVerified(t, await verify(['N=3', 'RING=3', 'MAX_FAILS=1', 'MAX_RESTARTS=1', 'TIMED_ONLY']));
});

t.test('bounded verification: a restart during the reconciliation (two restarts)', async (t) => {
  assertVerified(t, await verify(['N=3', 'RING=3', 'MAX_FAILS=0', 'MAX_RESTARTS=2']));
  assertVerified(t, await verify(['N=2', 'RING=2', 'MAX_FAILS=1', 'MAX_RESTARTS=2']));
});

/** -DWITNESS=n turns scenario n into an assertion failure: spin must reach it */
const WITNESSES: Record<number, string> = {
  1: 'B holds a frame',
  2: 'a new frame passes B directly after the release',
  3: 'B relays a held frame to A (rollback after switch-over)',
  4: 'A holds a frame under the second id',
  5: 'A replays its own ring into its VNF',
  6: 'a PRE frame is inside the switch while the rule changes to POST (the race Q closes)',
  7: 'a restarted controller resumes a release with frames still in B\'s ring',
  8: 'the drain has PRE frames to wait for (with timed waits: after the quiescence event A has taken in every PRE frame)',
  9: "a frame reaches B between the replay's last pop and the recorded flush",
};

/** scenarios only the timed waits leave open (the event closes them) */
const TIMED_WITNESSES = new Set([8]);

t.test('the verified bounds reach every scenario the model claims to cover', async (t) => {
  const used = [...new Set([...modelCode.matchAll(/\bW\((\d+)\)/g)].map((m) => m[1]!))].sort();
  t.same(used, Object.keys(WITNESSES).sort(), "the model's witnesses W(n) are the ones listed here");
  for (const [n, what] of Object.entries(WITNESSES)) {
    const v = await verify(['N=3', 'RING=3', 'MAX_FAILS=1', 'MAX_RESTARTS=1', `WITNESS=${n}`, ...(TIMED_WITNESSES.has(Number(n)) ? ['TIMED_ONLY'] : [])]);
    t.ok(v.errors > 0 && new RegExp(`witness ${n}\\b`).test(v.trail ?? ''), `reached: ${what} (${v.states} states searched)`);
  }
});

// ---------------------------------------------------------------- the check can fail

interface Mutation {
  defines: string[];
  why: string;
  /** what the counterexample's replay must show */
  shows: RegExp;
  check?: (m: RegExpMatchArray) => boolean;
}

// Mutations run without failures and restarts: the bug is on the normal path,
// and the counterexample stays short.
const normalPath = ['N=3', 'MAX_FAILS=0', 'MAX_RESTARTS=0'];
const reordered: Pick<Mutation, 'shows' | 'check'> = { shows: /P1: sink got frame (\d+), expected (\d+)/, check: (m) => Number(m[1]) !== Number(m[2]) };
const notFinal: Pick<Mutation, 'shows' | 'check'> = {
  shows: /P2: the state move begins, A has processed (\d+) of the (\d+) frames routed to it/,
  check: (m) => Number(m[1]) < Number(m[2]),
};

/** a quiescence event that ends its wait while the assumption of the timed wait does not hold yet */
const early: Pick<Mutation, 'shows'> = { shows: /QUIESCE: the event ended the wait for [AB] before its assumption held/ };

/** the first and last line of a multi-line match */
function brief(s: string): string {
  const lines = s.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines.length > 1 ? `${lines[0]} … ${lines[lines.length - 1]}` : (lines[0] ?? '');
}

// The engine's waits are guards of the timed model (TIMED_ONLY). With the
// quiescence event each of them alone leaves A final (every wait after it
// repeats the event), so removing one is no error there: the event's own
// guards are its two barriers.
const MUTATIONS: Mutation[] = [
  { defines: ['BUG_PASS_BEFORE_FLUSH'], why: 'agent: a new frame passes once the ring is empty, before the replayed frames flushed', ...reordered },
  { defines: ['BUG_NO_DRAIN_WAIT', 'TIMED_ONLY'], why: 'engine: the state moves without waiting for the PRE count', ...notFinal },
  { defines: ['BUG_NO_DRAIN_WAIT', 'SINK_ONLY', 'TIMED_ONLY'], why: 'the same, seen by the sink alone', ...reordered },
  { defines: ['BUG_NO_VNF_WAIT', 'TIMED_ONLY'], why: "engine: no Q after the count (A's VNF may still run)", ...notFinal },
  { defines: ['BUG_NO_SWITCH_WAIT', 'TIMED_ONLY'], why: 'engine: pre_sent read right after the switch-over', ...notFinal },
  { defines: ['BUG_NO_PREMARK_WAIT', 'TIMED_ONLY'], why: 'engine: switch-over right after pre-marking', ...notFinal },
  { defines: ['BUG_NO_SWITCH_BARRIER'], why: 'the quiescence event without its switch barrier (a frame that read the old action is still inside the switch)', ...early },
  { defines: ['BUG_NO_AGENT_BARRIER'], why: "the quiescence event without its agent barrier (A's VNF may still run a frame its agent took in)", ...early },
  { defines: ['RING=1', 'SINK_ONLY'], why: 'a ring smaller than the frames held (what the capacity check refuses)', shows: /ring of 1 overflows: frame (\d+) dropped[^]*P1: (?:sink got frame \d+, expected \1|the sink got \d+ of \d+ frames)/ },
];

t.test('removing any one guard makes spin report an error, and the trail shows the lost or reordered frame', async (t) => {
  for (const m of MUTATIONS) {
    await t.test(`${m.defines.join(' ')}: ${m.why}`, async (t) => {
      const v = await verify([...normalPath, ...m.defines]);
      t.ok(v.errors > 0, `spin reports an error (${figures(v)})`);
      t.match(v.output, /assertion violated/, 'an assertion is violated');
      t.ok(v.trail !== undefined, 'pan wrote a trail');
      const shown = v.trail?.match(m.shows);
      t.ok(shown && (m.check?.(shown) ?? true), `the trail shows it: ${shown ? brief(shown[0]) : `nothing matches ${m.shows}`}`);
      t.match(v.trail ?? '', /spin: text of failed assertion/, 'the replay ends at the failed assertion');
      if (shown) t.comment(brief(shown[0]));
    });
  }
});

// ---------------------------------------------------------------- gaps in the engine's error handling

// Failure points the first model found the engine did not survive: a failure
// once the release began (rolled back to A after B's VNF had run) and a
// switch-over write that took effect yet reported failure (rolled back as if
// nothing had switched, disarming B while it held frames). The engine now
// retries forward once committed and sets switchedOver before the writes;
// the model carries both fixes and must verify with these failures enabled.
t.test("the engine survives late failures and a half-done switch-over write", async (t) => {
  const late = await verify([...normalPath.filter((d) => !d.startsWith('MAX_FAILS')), 'MAX_FAILS=1', 'FAIL_LATE']);
  assertVerified(t, late);
  const write = await verify([...normalPath.filter((d) => !d.startsWith('MAX_FAILS')), 'MAX_FAILS=1', 'FAIL_SWITCH_WRITE']);
  assertVerified(t, write);
});
