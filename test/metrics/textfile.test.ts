// The cumulative node_exporter textfile of `sharpctl deploy handover
// --metrics-textfile`: two runs' figures add up series by series, gauges
// take the newer value, and a malformed or disagreeing old file is refused
// naming its line, with the file left byte for byte as it was.
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HandoverMetrics } from '../../src/handover/metrics.js';
import type { HandoverResult } from '../../src/handover/engine.js';
import { ExpositionParseError, mergeIntoTextfile, parseExposition, TextfileMergeError } from '../../src/metrics/textfile.js';

/** what HandoverMetrics reads of a result; the rest of a HandoverResult does not matter to it */
function result(o: { outcome: HandoverResult['outcome']; durationMs: number; stateMs: number; timings: Record<string, number>; overflow?: bigint }): HandoverResult {
  const counts = { preSent: 0n, preSeen: 0n, postSent: 0n, held: 10n, released: 10n, overflow: o.overflow ?? 0n, replayFailed: 0n, relayed: 0n, dropped: 0n };
  return { id: 1, from: 'a', to: 'b', rules: [1], reason: undefined, mode: 'sharp', counts, stranded: [], drops: [], waits: [], events: [], ...o } as unknown as HandoverResult;
}

const timings = { arming: 0, 'pre-marking': 2, switching: 5, draining: 6, 'moving-state': 10, releasing: 110, cleaning: 111, completed: 115 };

/** sample value by name and labels (exactly one such sample) */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const hits = parseExposition(text, 'test')
    .flatMap((f) => f.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels.some((l) => l[0] === k && l[1] === v)));
  if (hits.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]!.value;
}

t.test('one handover: phases from the step timings, the state move by backend, the outcome counted', async (t) => {
  const m = new HandoverMetrics();
  m.observe(result({ outcome: 'completed', durationMs: 116, stateMs: 99, timings }), { backend: 'vnf-map' });
  const text = m.text();
  t.equal(value(text, 'sharp_handovers_total', { outcome: 'completed' }), 1);
  t.equal(value(text, 'sharp_handovers_total', { outcome: 'failed' }), 0, 'the other outcomes at 0');
  t.equal(value(text, 'sharp_handover_phase_duration_seconds_sum', { phase: 'moving-state' }), 0.1, 'moving-state: 10 → 110 ms');
  t.equal(value(text, 'sharp_handover_phase_duration_seconds_sum', { phase: 'cleaning' }), 0.004, 'cleaning: until the outcome');
  t.equal(parseExposition(text, 't').find((f) => f.name === 'sharp_handover_phase_duration_seconds')!.samples.filter((s) => s.name.endsWith('_count')).length, 7, 'seven phases, no series for the outcome step');
  t.equal(value(text, 'sharp_handover_phase_duration_seconds_bucket', { phase: 'moving-state', le: '0.05' }), 0);
  t.equal(value(text, 'sharp_handover_phase_duration_seconds_bucket', { phase: 'moving-state', le: '0.1' }), 1, 'le is inclusive');
  t.equal(value(text, 'sharp_handover_state_move_duration_seconds_count', { backend: 'vnf-map' }), 1);
  t.equal(value(text, 'sharp_handover_duration_seconds_sum', { mode: 'sharp' }), 0.116);
});

t.test('textfile: two runs add up; a new series is added; the writes leave no temporary file', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-textfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'sharp.prom');
  const run = (r: HandoverResult, backend: string): string => {
    const m = new HandoverMetrics();
    m.observe(r, { backend });
    return m.text();
  };
  mergeIntoTextfile(file, run(result({ outcome: 'completed', durationMs: 116, stateMs: 99, timings }), 'vnf-map'));
  const first = readFileSync(file, 'utf8');
  t.equal(value(first, 'sharp_handovers_total', { outcome: 'completed' }), 1, 'the first run creates the file');
  mergeIntoTextfile(file, run(result({ outcome: 'lossy', durationMs: 300, stateMs: 200, timings: { arming: 0, 'pre-marking': 2, switching: 5, draining: 6, 'moving-state': 10, releasing: 210, cleaning: 211, lossy: 215 }, overflow: 7n }), 'redis'));
  const both = readFileSync(file, 'utf8');
  t.equal(value(both, 'sharp_handovers_total', { outcome: 'completed' }), 1);
  t.equal(value(both, 'sharp_handovers_total', { outcome: 'lossy' }), 1);
  t.equal(value(both, 'sharp_handover_lost_frames_total'), 7);
  t.equal(value(both, 'sharp_handover_phase_duration_seconds_count', { phase: 'moving-state' }), 2, 'the phase histogram counts both');
  t.equal(value(both, 'sharp_handover_phase_duration_seconds_sum', { phase: 'moving-state' }), 0.1 + 0.2);
  t.equal(value(both, 'sharp_handover_phase_duration_seconds_bucket', { phase: 'moving-state', le: '0.25' }), 2, 'buckets add');
  t.equal(value(both, 'sharp_handover_phase_duration_seconds_bucket', { phase: 'moving-state', le: '0.1' }), 1);
  t.equal(value(both, 'sharp_handover_duration_seconds_count', { mode: 'sharp' }), 2);
  t.equal(value(both, 'sharp_handover_state_move_duration_seconds_count', { backend: 'vnf-map' }), 1, 'a backend of the first run keeps its series');
  t.equal(value(both, 'sharp_handover_state_move_duration_seconds_count', { backend: 'redis' }), 1, "the second run's backend is added");
  t.same(readdirSync(dir), ['sharp.prom'], 'no temporary file left');
  t.equal(parseExposition(both, 'merged').length, parseExposition(first, 'first').length, 'one family each, HELP and TYPE once');
});

t.test('textfile: a malformed or disagreeing old file is refused naming its line, and stays as it was', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-textfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const m = new HandoverMetrics();
  m.observe(result({ outcome: 'completed', durationMs: 116, stateMs: 99, timings }), { backend: 'vnf-map' });
  const cases: [string, string, RegExp, typeof ExpositionParseError | typeof TextfileMergeError][] = [
    ['not a number', '# TYPE sharp_handovers_total counter\nsharp_handovers_total{outcome="completed"} many\n', /:2: .*'many' is not a number/, ExpositionParseError],
    ['no TYPE', 'sharp_handovers_total{outcome="completed"} 1\n', /:1: .*has no TYPE/, ExpositionParseError],
    ['a timestamp', '# TYPE sharp_handovers_total counter\nsharp_handovers_total 1 1700000000000\n', /:2: .*timestamp/, ExpositionParseError],
    ['an unclosed label', '# TYPE x_total counter\n\nx_total{a="b} 1\n', /:3: .*no closing quote/, ExpositionParseError],
    ['a negative counter', '# TYPE x_total counter\nx_total -1\n', /:2: .*not negative/, ExpositionParseError],
    ['the same series twice', '# TYPE x_total counter\nx_total{a="1"} 1\nx_total{a="1"} 2\n', /:3: .*twice/, ExpositionParseError],
    ['cut short', '# TYPE x_total counter\nx_total 1', /:2: .*no newline/, ExpositionParseError],
    ['another type', '# TYPE sharp_handovers_total gauge\nsharp_handovers_total{outcome="completed"} 1\n', /line 1: sharp_handovers_total is a gauge there, and a counter/, TextfileMergeError],
    [
      'other buckets',
      '# TYPE sharp_handover_duration_seconds histogram\nsharp_handover_duration_seconds_bucket{mode="sharp",le="1"} 1\nsharp_handover_duration_seconds_bucket{mode="sharp",le="+Inf"} 1\nsharp_handover_duration_seconds_sum{mode="sharp"} 0.5\nsharp_handover_duration_seconds_count{mode="sharp"} 1\n',
      /line 2: .*buckets there \(le 1, \+Inf\) are not this run's/,
      TextfileMergeError,
    ],
  ];
  for (const [what, content, message, type] of cases) {
    const file = path.join(dir, `${what.replace(/ /g, '-')}.prom`);
    writeFileSync(file, content);
    t.throws(() => mergeIntoTextfile(file, m.text()), type, `${what}: refused`);
    t.throws(() => mergeIntoTextfile(file, m.text()), { message }, `${what}: the error names the line`);
    t.match(String((() => { try { mergeIntoTextfile(file, m.text()); } catch (e) { return (e as Error).message; } return ''; })()), /the file is unchanged/);
    t.equal(readFileSync(file, 'utf8'), content, `${what}: the file is unchanged`);
  }
  t.equal(readdirSync(dir).filter((f) => f.endsWith('.tmp')).length, 0, 'no temporary file left');
});

t.test('the reader: escapes, comments, HELP after TYPE', async (t) => {
  const text = '# a comment\n# TYPE x_total counter\n# HELP x_total a help \\\\ with \\n escapes\nx_total{a="q\\"b\\\\c\\nd",b=""} 3\n\n';
  const [f] = parseExposition(text, 't');
  t.equal(f!.help, 'a help \\ with \n escapes');
  t.same(f!.samples[0]!.labels, [['a', 'q"b\\c\nd'], ['b', '']]);
  t.throws(() => parseExposition('# TYPE x summary\n', 't'), /:1: TYPE x 'summary': this reader takes counter, gauge, histogram/);
});
