// The lab daemon's handover metrics, as a user reads them: `sharpctl lab up`
// (XDP, node processes), two real handovers through the CLI, then GET
// /metrics on the daemon's Unix socket with a real HTTP client, and
// `sharpctl lab metrics` (text and --json). Two completed handovers: every
// SHarP phase observed twice, their time within the handovers' time; a
// refused request counted by its reason, as no handover.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { statSync, existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { repoRoot } from '../helpers/env.js';
import { cli, cliLab } from '../helpers/cli.js';
import { parseExposition, type ParsedSample } from '../../src/metrics/textfile.js';
import { EXPOSITION_CONTENT_TYPE } from '../../src/metrics/exposition.js';
import { SHARP_STEPS } from '../../src/handover/run.js';

const { name, runDir, env } = cliLab(t, 'zm');

function run(args: string[]): string {
  const r = spawnSync(process.execPath, [cli, ...args, '--name', name], { encoding: 'utf8', timeout: 120_000, cwd: repoRoot, env });
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function scrape(socketPath: string): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/metrics', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

const samplesOf = (text: string): ParsedSample[] => parseExposition(text, 'the lab daemon').flatMap((f) => f.samples);

/** the one sample of `name` whose labels include `labels` */
function value(samples: readonly ParsedSample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels.some((l) => l[0] === k && l[1] === v)));
  if (hits.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]!.value;
}

t.test('lab daemon metrics: two handovers, every phase observed twice, within the handovers\' time', async (t) => {
  run(['lab', 'up', '--json']);
  const socket = path.join(runDir, name, 'metrics.sock');
  t.ok(existsSync(socket), 'the daemon serves its metrics in the run directory');
  t.equal(statSync(socket).mode & 0o777, 0o600, 'on a socket only its owner may use (0600)');

  const fresh = await scrape(socket);
  t.equal(fresh.status, 200);
  t.equal(fresh.contentType, EXPOSITION_CONTENT_TYPE);
  const before = samplesOf(fresh.body);
  t.equal(value(before, 'sharp_handovers_total', { outcome: 'completed' }), 0, 'before any handover: completed 0');
  t.equal(before.filter((s) => s.name === 'sharp_handover_phase_duration_seconds_count').length, 0, 'and no phase observed');
  for (const reason of ['capacity', 'busy', 'invalid']) t.equal(value(before, 'sharp_handovers_refused_total', { reason }), 0, `refused (${reason}): 0`);

  const first = JSON.parse(run(['handover', 'all', '--from', 'vnf1', '--to', 'vnf2', '--state-delay', '30', '--json'])) as { outcome: string; durationMs: number };
  const second = JSON.parse(run(['handover', 'all', '--from', 'vnf2', '--to', 'vnf1', '--state-delay', '30', '--json'])) as { outcome: string; durationMs: number };
  t.same([first.outcome, second.outcome], ['completed', 'completed'], 'both handovers completed');

  // the rules are back at vnf1: a request to move them from vnf2 is refused, and counted as such (no handover ran)
  const refused = spawnSync(process.execPath, [cli, 'handover', 'all', '--from', 'vnf2', '--to', 'vnf1', '--name', name], { encoding: 'utf8', timeout: 120_000, cwd: repoRoot, env });
  t.not(refused.status, 0, 'a handover of no rule is refused');
  t.match(refused.stderr, /no rule sends traffic to vnf2/);

  const r = await scrape(socket);
  t.equal(r.status, 200);
  const after = samplesOf(r.body);
  t.equal(value(after, 'sharp_handovers_total', { outcome: 'completed' }), 2, 'sharp_handovers_total{outcome="completed"} 2');
  for (const outcome of ['lossy', 'aborted', 'failed']) t.equal(value(after, 'sharp_handovers_total', { outcome }), 0, `${outcome}: 0`);
  t.equal(value(after, 'sharp_handovers_refused_total', { reason: 'invalid' }), 1, 'sharp_handovers_refused_total{reason="invalid"} 1: the refused request');
  t.equal(value(after, 'sharp_handovers_refused_total', { reason: 'capacity' }) + value(after, 'sharp_handovers_refused_total', { reason: 'busy' }), 0, 'no other refusal');
  t.equal(value(after, 'sharp_handover_lost_frames_total'), 0, 'no frame lost');
  t.equal(value(after, 'sharp_handover_duration_seconds_count', { mode: 'sharp' }), 2);
  const total = value(after, 'sharp_handover_duration_seconds_sum', { mode: 'sharp' });
  t.ok(Math.abs(total - (first.durationMs + second.durationMs) / 1000) < 0.001, `the duration sum ${total} s is the two handovers' ${first.durationMs} + ${second.durationMs} ms`);

  const phases = SHARP_STEPS.filter((s) => s !== 'validating');
  let phaseSum = 0;
  for (const phase of phases) {
    t.equal(value(after, 'sharp_handover_phase_duration_seconds_count', { phase }), 2, `${phase}: observed twice`);
    t.equal(value(after, 'sharp_handover_phase_duration_seconds_bucket', { phase, le: '+Inf' }), 2, `${phase}: +Inf bucket 2`);
    const sum = value(after, 'sharp_handover_phase_duration_seconds_sum', { phase });
    t.ok(sum > 0, `${phase}: ${sum} s in all`);
    phaseSum += sum;
  }
  t.equal(after.filter((s) => s.name === 'sharp_handover_phase_duration_seconds_count').length, phases.length, `only SHarP's ${phases.length} phases`);
  t.ok(phaseSum <= total, `the phases' time ${phaseSum.toFixed(4)} s is within the handovers' ${total.toFixed(4)} s`);
  t.equal(value(after, 'sharp_handover_state_move_duration_seconds_count', { backend: 'vnf-map' }), 2, 'two state moves with the lab\'s backend (vnf-map)');
  const stateSum = value(after, 'sharp_handover_state_move_duration_seconds_sum', { backend: 'vnf-map' });
  t.ok(stateSum >= 0.06 && stateSum <= value(after, 'sharp_handover_phase_duration_seconds_sum', { phase: 'moving-state' }), `the state moves' ${stateSum} s: at least the two 30 ms delays, within moving-state`);

  // the CLI prints what the socket answers (the same figures: nothing happened in between)
  const printed = run(['lab', 'metrics']);
  t.equal(printed, r.body, 'sharpctl lab metrics prints the exposition');
  const json = JSON.parse(run(['lab', 'metrics', '--json'])) as { name: string; labels: Record<string, string>; value: number | string }[];
  t.same(
    json.find((s) => s.name === 'sharp_handovers_total' && s.labels['outcome'] === 'completed'),
    { name: 'sharp_handovers_total', labels: { outcome: 'completed' }, value: 2 },
    '--json: the samples',
  );

  run(['lab', 'down']);
  t.notOk(existsSync(socket), 'lab down removes the socket');
});
