/**
 * Lab specs: parse (JSON or YAML), validate (schema, then the topology,
 * address and rule checks; every problem is reported at once), fill in
 * defaults.
 *
 *   const spec = loadSpec('lab.yaml');      // throws SpecError listing every problem
 *   const r = validateSpec(JSON.parse(s));  // { ok: true, spec } | { ok: false, errors }
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { schemaIssues, schemaPath, labSpecSchema } from './schema.js';
import { semanticIssues, normalize, protoNumber } from './semantics.js';
import { specAsset } from './assets.js';
import { findJsonSyntaxError } from './json-position.js';
import { SpecError, type LabSpec, type LabSpecInput, type SpecIssue } from './types.js';
import { pathString, type RawIssue, type Segment } from './util.js';

export * from './types.js';
export { schemaPath, labSpecSchema, protoNumber };

export type SpecFormat = 'json' | 'yaml';

export type ValidationResult = { ok: true; spec: LabSpec } | { ok: false; errors: SpecIssue[] };

// ---------------------------------------------------------------- parsing

function lineCol(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: lines[lines.length - 1]!.length + 1 };
}

/** Parses spec text; syntax errors become a SpecError with line and column. */
export function parseSpec(text: string, format: SpecFormat): unknown {
  const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  if (format === 'json') {
    try {
      return JSON.parse(src) as unknown;
    } catch (e) {
      const found = findJsonSyntaxError(src);
      const message = `not valid JSON: ${found?.message ?? (e instanceof Error ? e.message : String(e))}`;
      throw new SpecError([{ path: '', message, ...(found ? lineCol(src, found.offset) : {}) }], { cause: e });
    }
  }
  // merge keys (<<: *anchor) let a hand-written spec share settings between entries
  const doc = parseDocument(src, { prettyErrors: true, merge: true });
  if (doc.errors.length > 0) {
    throw new SpecError(
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        const message = `not valid YAML: ${e.message.replace(/ at line \d+, column \d+:[\s\S]*$/, '').trim()}`;
        return { path: '', message, ...(pos ? { line: pos.line, column: pos.col } : {}) };
      }),
    );
  }
  return doc.toJS() as unknown;
}

// ---------------------------------------------------------------- validation

const TOP_ORDER = ['$schema', 'name', 'description', 'target', 'state', 'redis', 'hosts', 'switches', 'vnfs', 'links', 'rules'];

/** document order: top-level field, then element index; stable within */
function sortIssues(issues: RawIssue[]): RawIssue[] {
  const rank = (r: RawIssue): [number, number] => {
    const top = r.at[0];
    const t = top === undefined ? -1 : typeof top === 'string' && TOP_ORDER.includes(top) ? TOP_ORDER.indexOf(top) : TOP_ORDER.length;
    const idx = typeof r.at[1] === 'number' ? r.at[1] : -1;
    return [t, idx];
  };
  return issues
    .map((r, n) => ({ r, n, k: rank(r) }))
    .sort((a, b) => a.k[0] - b.k[0] || a.k[1] - b.k[1] || a.n - b.n)
    .map((x) => x.r);
}

function validateRaw(value: unknown): { ok: true; spec: LabSpec } | { ok: false; raw: RawIssue[] } {
  const raw = sortIssues([...schemaIssues(value), ...semanticIssues(value)]);
  if (raw.length > 0) return { ok: false, raw };
  return { ok: true, spec: normalize(value as LabSpecInput) };
}

const toIssue = (r: RawIssue): SpecIssue => ({ path: pathString(r.at), message: r.message });

/**
 * Checks a parsed spec against the schema and the semantic rules and fills
 * in defaults. Every problem is reported, not just the first.
 */
export function validateSpec(value: unknown): ValidationResult {
  const r = validateRaw(value);
  return r.ok ? r : { ok: false, errors: r.raw.map(toIssue) };
}

/** Where in the text an issue's path points (the nearest existing node). */
function locate(doc: Document, lines: LineCounter, at: readonly Segment[]): { line: number; column: number } | undefined {
  for (let n = at.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(at.slice(0, n), true);
    if (isNode(node) && node.range) {
      const p = lines.linePos(node.range[0]);
      return { line: p.line, column: p.col };
    }
  }
  return undefined;
}

/** Parses and validates spec text; throws SpecError (with line numbers) listing every problem. */
export function specFromText(text: string, format: SpecFormat, source?: string): LabSpec {
  let value: unknown;
  try {
    value = parseSpec(text, format);
  } catch (e) {
    if (e instanceof SpecError && source !== undefined) throw new SpecError(e.errors, { source, cause: e });
    throw e;
  }
  const r = validateRaw(value);
  if (r.ok) return r.spec;
  // JSON is YAML too: one parser finds positions for both formats
  const lines = new LineCounter();
  const doc = parseDocument(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, { lineCounter: lines, merge: true });
  const located = doc.errors.length === 0;
  const errors = r.raw.map((x) => ({ ...toIssue(x), ...(located ? locate(doc, lines, x.at) : undefined) }));
  throw new SpecError(errors, source === undefined ? {} : { source });
}

export function formatOf(file: string): SpecFormat | undefined {
  const ext = path.extname(file).toLowerCase();
  return ext === '.json' ? 'json' : ext === '.yaml' || ext === '.yml' ? 'yaml' : undefined;
}

/** The largest spec file loadSpec reads. */
export const MAX_SPEC_BYTES = 1024 * 1024;
const MAX_SPEC_TEXT = '1 MiB';

function kindOf(st: Stats): string {
  return st.isDirectory()
    ? 'a directory'
    : st.isFIFO()
      ? 'a FIFO'
      : st.isCharacterDevice()
        ? 'a character device'
        : st.isBlockDevice()
          ? 'a block device'
          : st.isSocket()
            ? 'a socket'
            : 'not a file';
}

/**
 * A spec file's text: a regular file of at most MAX_SPEC_BYTES of UTF-8
 * text. Never blocks (a FIFO is opened non-blocking and refused) and never
 * reads more than the limit (+1 byte to tell).
 */
function readSpecText(file: string): string {
  const problem = (message: string, cause?: unknown): SpecError => new SpecError([{ path: '', message }], { source: file, ...(cause === undefined ? {} : { cause }) });
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw problem(`cannot read the file: ${e instanceof Error ? e.message : String(e)}`, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw problem(`not a regular file (${kindOf(st)}): a spec is a .json or .yaml file of at most ${MAX_SPEC_TEXT}`);
    if (st.size > MAX_SPEC_BYTES) throw problem(`${st.size} bytes: larger than the ${MAX_SPEC_TEXT} limit for a spec`);
    const buf = Buffer.alloc(MAX_SPEC_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    if (n > MAX_SPEC_BYTES) throw problem(`larger than the ${MAX_SPEC_TEXT} limit for a spec (it grew while being read)`);
    const bytes = buf.subarray(0, n);
    const nul = bytes.indexOf(0);
    if (nul >= 0) throw problem(`not a text file: a NUL byte at offset ${nul} (a spec is JSON or YAML text in UTF-8)`);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      throw problem('not a text file: it is not valid UTF-8 (a spec is JSON or YAML text in UTF-8)', e);
    }
  } catch (e) {
    if (e instanceof SpecError) throw e;
    throw problem(`cannot read the file: ${e instanceof Error ? e.message : String(e)}`, e);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a spec file (.json, .yaml or .yml; a regular file of at most 1 MiB
 * of UTF-8 text), validates it and fills in defaults; throws SpecError.
 */
export function loadSpec(file: string): LabSpec {
  const format = formatOf(file);
  if (!format) {
    throw new SpecError([{ path: '', message: `cannot tell the format from the name: use .json, .yaml or .yml (got ${path.extname(file) || 'no extension'})` }], { source: file });
  }
  return specFromText(readSpecText(file), format, file);
}

// ---------------------------------------------------------------- the default lab

/** src/lab/spec/default.yaml (resolved from dist/ as well) */
export function defaultSpecPath(): string {
  return specAsset('default.yaml');
}

/**
 * The standard lab: client — s1 — {vnf1, vnf2} — s2 — server. Traffic
 * between client and server goes through vnf1 both ways (as the test lab
 * does); vnf2 stands by as handover target. Same as default.yaml.
 */
export function defaultSpec(): LabSpec {
  const client = '10.0.0.1';
  const server = '10.0.0.2';
  const vnf = (name: string): LabSpec['vnfs'][number] => ({ name, type: 'counter', ringCapacity: 4096, ringCount: 4 });
  const link = (a: string, b: string): LabSpec['links'][number] => ({ ends: [a, b], mtu: 1500 });
  return {
    name: 'demo',
    description: 'client — s1 — {vnf1, vnf2} — s2 — server; client<->server traffic through vnf1',
    target: 'xdp',
    state: 'vnf-map',
    hosts: [
      { name: 'client', ip: `${client}/24`, mac: '02:00:0a:00:00:01' },
      { name: 'server', ip: `${server}/24`, mac: '02:00:0a:00:00:02' },
    ],
    switches: [{ name: 's1' }, { name: 's2' }],
    vnfs: [vnf('vnf1'), vnf('vnf2')],
    links: [link('client', 's1'), link('s1', 'vnf1'), link('s1', 'vnf2'), link('vnf1', 's2'), link('vnf2', 's2'), link('s2', 'server')],
    rules: [
      { switch: 's1', match: { dst: `${server}/32`, from: 'client' }, to: 'vnf1', priority: 1 },
      { switch: 's1', match: { dst: `${client}/32` }, to: 'client', priority: 1 },
      { switch: 's2', match: { dst: `${client}/32`, from: 'server' }, to: 'vnf1', priority: 1 },
      { switch: 's2', match: { dst: `${server}/32` }, to: 'server', priority: 1 },
    ],
  };
}

// ---------------------------------------------------------------- topology helpers

/** Nodes linked to `node`, in link order. */
export function neighbours(spec: LabSpec, node: string): string[] {
  const out: string[] = [];
  for (const l of spec.links) {
    if (l.ends[0] === node) out.push(l.ends[1]);
    else if (l.ends[1] === node) out.push(l.ends[0]);
  }
  return out;
}

/** A VNF's switches: [side 0 (ingress, its first listed link), side 1]. */
export function vnfSwitches(spec: LabSpec, vnf: string): [string, string] {
  const n = neighbours(spec, vnf);
  if (n.length !== 2) throw new Error(`VNF ${vnf} has ${n.length} links`);
  return [n[0]!, n[1]!];
}
