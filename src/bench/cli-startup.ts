/**
 * How fast sharpctl answers: process start to exit of `sharpctl --help` and
 * of `sharpctl status` against a running lab (a round trip to its daemon,
 * which reads the nodes' counters), next to `node -e 0`, the floor no Node
 * CLI goes below. The three run interleaved, round after round, so a busy
 * machine slows them alike; medians are reported.
 *
 * The lab is a real one (`sharpctl lab up`, a few seconds), in a private run
 * directory under a name of this process's pid, and is taken down however
 * the measurement ends.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CliStartup {
  runs: number;
  nodeFloorMedianMs: number;
  helpMedianMs: number;
  statusMedianMs: number;
}

export class CliBenchError extends Error {
  override name = 'CliBenchError';
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function benchCliStartup(o: { repoRoot: string; runs?: number; progress?: (line: string) => void }): Promise<CliStartup> {
  const runs = o.runs ?? 20;
  const cli = path.join(o.repoRoot, 'dist/src/cli/main.js');
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharp-bench-cli-'));
  const env = { ...process.env, SHARPCTL_RUN_DIR: runDir };
  // labName: a letter, then at most 9 letters or digits
  const name = `bc${process.pid % 1e8}`;
  const sharpctl = (args: string[]): { code: number | null; stderr: string; ms: number } => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
    return { code: r.status, stderr: r.stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
  };
  const timed = (argv: string[]): number => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0]!, argv.slice(1), { env, stdio: 'ignore' });
    if (r.status !== 0) throw new CliBenchError(`${argv.join(' ')} exited ${r.status}`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  try {
    o.progress?.(`lab up --name ${name} (run directory ${runDir})`);
    const up = sharpctl(['lab', 'up', '--name', name, '--json']);
    if (up.code !== 0) throw new CliBenchError(`sharpctl lab up exited ${up.code}: ${up.stderr.trim()}`);
    const floor: number[] = [];
    const help: number[] = [];
    const status: number[] = [];
    // one untimed round: the page cache holds every file afterwards, as on an operator's machine
    for (const argv of [['-e', '0'], [cli, '--help'], [cli, 'status', '--name', name]]) timed([process.execPath, ...argv]);
    for (let i = 0; i < runs; i++) {
      floor.push(timed([process.execPath, '-e', '0']));
      help.push(timed([process.execPath, cli, '--help']));
      status.push(timed([process.execPath, cli, 'status', '--name', name]));
    }
    return { runs, nodeFloorMedianMs: +median(floor).toFixed(1), helpMedianMs: +median(help).toFixed(1), statusMedianMs: +median(status).toFixed(1) };
  } finally {
    const down = sharpctl(['lab', 'down', '--name', name]);
    if (down.code !== 0) process.stderr.write(`cli bench: lab down --name ${name} exited ${down.code}: ${down.stderr.trim()}\n`);
    rmSync(runDir, { recursive: true, force: true });
  }
}
