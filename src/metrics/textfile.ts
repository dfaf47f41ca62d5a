/**
 * A strict reader of the Prometheus text exposition format (0.0.4) as this
 * project writes it — counters, gauges and histograms, no timestamps (the
 * node_exporter textfile collector refuses them) — and the cumulative
 * textfile: a run's figures added to the previous file's, written to a
 * temporary file and renamed over it, so that node_exporter never reads
 * half a file. A malformed old file is an error naming its line, and the
 * file is left as it was.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { escapeLabel } from './exposition.js';

export type FamilyType = 'counter' | 'gauge' | 'histogram';

export interface ParsedSample {
  name: string;
  /** in the order written */
  labels: [string, string][];
  value: number;
  /** 1-based line of the source */
  line: number;
}

export interface ParsedFamily {
  name: string;
  type: FamilyType;
  help: string | undefined;
  /** the TYPE line */
  line: number;
  samples: ParsedSample[];
}

/** A line that is not exposition text as this reader takes it; `line` is 1-based. */
export class ExpositionParseError extends Error {
  override name = 'ExpositionParseError';
  constructor(
    readonly source: string,
    readonly line: number,
    readonly reason: string,
  ) {
    super(`${source}:${line}: ${reason}`);
  }
}

/** The old textfile and the new figures disagree (a family's type, a histogram's buckets). */
export class TextfileMergeError extends Error {
  override name = 'TextfileMergeError';
}

/** The textfile could not be read or written. */
export class TextfileIoError extends Error {
  override name = 'TextfileIoError';
}

/** an old textfile larger than this is refused (the project's own hold a few hundred lines) */
export const MAX_TEXTFILE_BYTES = 4 * 1024 * 1024;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;
const TYPES: readonly string[] = ['counter', 'gauge', 'histogram'];

const seriesKey = (name: string, labels: readonly (readonly [string, string])[]): string => JSON.stringify([name, [...labels].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))]);

function parseValue(s: string): number | undefined {
  if (!FLOAT.test(s)) return undefined;
  if (s.endsWith('Inf')) return s.startsWith('-') ? -Infinity : Infinity;
  return s === 'NaN' ? NaN : Number(s);
}

/** `{a="x",b="y"}` from position 0 of `s`: the labels and where the value begins. */
function parseLabels(s: string, fail: (reason: string) => never): { labels: [string, string][]; rest: string } {
  const labels: [string, string][] = [];
  let i = 1;
  if (s[i] === '}') return { labels, rest: s.slice(i + 1) };
  for (;;) {
    const name = LABEL_NAME.exec(s.slice(i))?.[0];
    if (name === undefined) fail(`a label name at column ${i + 1}`);
    i += name.length;
    if (s[i] !== '=' || s[i + 1] !== '"') fail(`label ${name}: expected ="value" at column ${i + 1}`);
    i += 2;
    let v = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) fail(`label ${name}: its value has no closing quote`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i + 1];
        if (e === 'n') v += '\n';
        else if (e === '\\' || e === '"') v += e;
        else fail(`label ${name}: '\\${e ?? ''}' is not an escape of the format (\\\\, \\", \\n)`);
        i += 2;
        continue;
      }
      v += c;
      i++;
    }
    if (labels.some((l) => l[0] === name)) fail(`label ${name} twice`);
    labels.push([name, v]);
    i++;
    if (s[i] === '}') return { labels, rest: s.slice(i + 1) };
    if (s[i] !== ',') fail(`expected , or } after label ${name} at column ${i + 1}`);
    i++;
  }
}

/** Parses exposition text; `source` names it in errors (a file's path). */
export function parseExposition(text: string, source: string): ParsedFamily[] {
  const families: ParsedFamily[] = [];
  const byName = new Map<string, ParsedFamily>();
  const helps = new Map<string, string>();
  const series = new Set<string>();
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  else if (text !== '') throw new ExpositionParseError(source, lines.length, 'the last line has no newline (a file cut short?)');
  let current: ParsedFamily | undefined;
  lines.forEach((raw, index) => {
    const n = index + 1;
    const fail: (reason: string) => never = (reason) => {
      throw new ExpositionParseError(source, n, reason);
    };
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const meta = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(raw);
      if (meta === null) return; // a comment
      const kind = meta[1];
      const name = meta[2]!;
      const rest = meta[3] ?? '';
      if (!METRIC_NAME.test(name)) fail(`'${name.slice(0, 60)}' is not a metric name`);
      if (kind === 'HELP') {
        if (helps.has(name)) fail(`HELP of ${name} twice`);
        helps.set(name, rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\'));
        const f = byName.get(name);
        if (f !== undefined) f.help = helps.get(name);
        return;
      }
      const type = rest.trim();
      if (!TYPES.includes(type)) fail(`TYPE ${name} '${type}': this reader takes ${TYPES.join(', ')}`);
      if (byName.has(name)) fail(`TYPE of ${name} twice`);
      current = { name, type: type as FamilyType, help: helps.get(name), line: n, samples: [] };
      families.push(current);
      byName.set(name, current);
      return;
    }
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw)?.[0];
    if (name === undefined) fail(`not a sample, a comment or blank: '${raw.slice(0, 60)}'`);
    let rest = raw.slice(name.length);
    let labels: [string, string][] = [];
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, fail));
    const fields = rest.trim().split(/\s+/);
    if (!/^\s/.test(rest) || fields.length === 0 || fields[0] === '') fail(`${name}: no value`);
    if (fields.length > 1) fail(`${name}: a timestamp or more after the value (the textfile collector takes none)`);
    const value = parseValue(fields[0]!);
    if (value === undefined) fail(`${name}: '${fields[0]!.slice(0, 40)}' is not a number`);
    const family = current;
    if (family === undefined) fail(`${name} has no TYPE line before it`);
    const expected = family.type === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => family.name + s) : [family.name];
    if (!expected.includes(name)) fail(byName.has(name) || byName.has(name.replace(/_(bucket|sum|count)$/, '')) ? `${name}: its family's samples are not all in one group` : `${name} is not a sample of ${family.type} ${family.name} (${expected.join(', ')}), and has no TYPE of its own`);
    if (family.type === 'counter' && !(value >= 0 && value !== Infinity)) fail(`${name}: a counter is finite and not negative, not ${fields[0]}`);
    if (family.type === 'histogram') {
      const le = labels.find((l) => l[0] === 'le');
      if (name.endsWith('_bucket') && (le === undefined || parseValue(le[1]) === undefined)) fail(`${name}: a bucket has an le label with a number`);
      if (!name.endsWith('_bucket') && le !== undefined) fail(`${name}: only buckets have an le label`);
      if (name !== `${family.name}_sum` && !(value >= 0)) fail(`${name}: a count is not negative, not ${fields[0]}`);
    }
    const key = seriesKey(name, labels);
    if (series.has(key)) fail(`${name}${labels.length ? `{${labels.map(([k, v]) => `${k}="${v}"`).join(',')}}` : ''}: the same series twice`);
    series.add(key);
    family.samples.push({ name, labels, value, line: n });
  });
  return families;
}

/** the le values of each series of a histogram (its labels without le) */
function bucketSets(f: ParsedFamily): Map<string, { les: string[]; line: number }> {
  const out = new Map<string, { les: string[]; line: number }>();
  for (const s of f.samples) {
    if (!s.name.endsWith('_bucket')) continue;
    const key = seriesKey('', s.labels.filter((l) => l[0] !== 'le'));
    const e = out.get(key) ?? { les: [], line: s.line };
    e.les.push(numberText(parseValue(s.labels.find((l) => l[0] === 'le')![1])!));
    out.set(key, e);
  }
  return out;
}

/**
 * `older` plus `newer`: counters and histograms add series by series,
 * gauges take the newer value; series and families of only one side are
 * kept. The two must agree on each family's type and on each histogram
 * series' buckets.
 */
export function mergeExpositions(older: readonly ParsedFamily[], newer: readonly ParsedFamily[]): ParsedFamily[] {
  const out = older.map((f) => ({ ...f, samples: f.samples.map((s) => ({ ...s })) }));
  const byName = new Map(out.map((f) => [f.name, f]));
  for (const nf of newer) {
    const of = byName.get(nf.name);
    if (of === undefined) {
      const copy = { ...nf, samples: nf.samples.map((s) => ({ ...s })) };
      out.push(copy);
      byName.set(nf.name, copy);
      continue;
    }
    if (of.type !== nf.type) throw new TextfileMergeError(`line ${of.line}: ${nf.name} is a ${of.type} there, and a ${nf.type} in this run's figures`);
    if (of.type === 'histogram') {
      const olds = bucketSets(of);
      for (const [key, n] of bucketSets(nf)) {
        const o = olds.get(key);
        if (o !== undefined && o.les.join(',') !== n.les.join(',')) throw new TextfileMergeError(`line ${o.line}: ${nf.name}'s buckets there (le ${o.les.join(', ')}) are not this run's (le ${n.les.join(', ')}): the two cannot be added`);
      }
    }
    if (nf.help !== undefined) of.help = nf.help;
    const samples = new Map(of.samples.map((s) => [seriesKey(s.name, s.labels), s]));
    for (const s of nf.samples) {
      const o = samples.get(seriesKey(s.name, s.labels));
      if (o === undefined) of.samples.push({ ...s });
      else o.value = of.type === 'gauge' ? s.value : o.value + s.value;
    }
  }
  return out;
}

function numberText(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** The families as exposition text. */
export function formatExposition(families: readonly ParsedFamily[]): string {
  const lines: string[] = [];
  for (const f of families) {
    if (f.help !== undefined) lines.push(`# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) lines.push(`${s.name}${s.labels.length ? `{${s.labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : ''} ${numberText(s.value)}`);
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/**
 * The textfile's families (none when there is no file yet); a malformed
 * file is an ExpositionParseError naming its line.
 */
export function readTextfile(file: string): ParsedFamily[] {
  let text = '';
  try {
    const size = statSync(file).size;
    if (size > MAX_TEXTFILE_BYTES) throw new TextfileIoError(`${file}: ${size} bytes, at most ${MAX_TEXTFILE_BYTES} (is it a metrics textfile?)`);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof TextfileIoError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new TextfileIoError(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return parseExposition(text, file);
  } catch (e) {
    if (e instanceof ExpositionParseError) throw new ExpositionParseError(e.source, e.line, `${e.reason}; the file is unchanged`);
    throw e;
  }
}

function mergedWith(file: string, exposition: string): ParsedFamily[] {
  const older = readTextfile(file);
  try {
    return mergeExpositions(older, parseExposition(exposition, 'this run'));
  } catch (e) {
    if (e instanceof TextfileMergeError) throw new TextfileMergeError(`${file}: ${e.message}; the file is unchanged`, { cause: e });
    throw e;
  }
}

/**
 * Whether `exposition` could be added to the textfile (it parses, the types
 * agree), without writing anything: check a textfile with it, and the
 * families of the figures to come (their series may still be empty),
 * before the work whose figures go into it.
 */
export function checkTextfile(file: string, exposition: string): void {
  mergedWith(file, exposition);
}

/**
 * Adds `exposition` (this run's figures) to the textfile at `file` (none
 * yet: it is created), atomically: the merged text goes to a temporary
 * file in the same folder, flushed, then renamed over the old one. Nothing
 * is written unless the old file parses and agrees with the new figures.
 * Two runs at the same moment may lose one's figures (the last rename
 * wins): give concurrent controllers files of their own.
 */
export function mergeIntoTextfile(file: string, exposition: string): void {
  const merged = formatExposition(mergedWith(file, exposition));
  // the collector reads only *.prom: a temporary name it ignores
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, merged);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new TextfileIoError(`cannot write ${file}: ${(e as Error).message}`, { cause: e });
  }
}
