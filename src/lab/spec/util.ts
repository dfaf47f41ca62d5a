/** Paths, issue collection and IPv4/MAC parsing for the spec checks. */

export type Segment = string | number;

/** An issue with its path still in segments (turned into text at the end). */
export interface RawIssue {
  at: Segment[];
  message: string;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** ['rules', 2, 'to'] -> "rules[2].to" */
export function pathString(at: readonly Segment[]): string {
  let s = '';
  for (const seg of at) {
    if (typeof seg === 'number') s += `[${seg}]`;
    else if (IDENT.test(seg)) s += s === '' ? seg : `.${seg}`;
    else s += `[${JSON.stringify(seg)}]`;
  }
  return s;
}

/** "/rules/2/to" -> ['rules', 2, 'to'] (array indexes become numbers) */
export function pointerSegments(pointer: string): Segment[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^(0|[1-9][0-9]*)$/.test(p) ? Number(p) : p));
}

// ------------------------------------------------------------ loose access to unchecked data

export function asObject(x: unknown): Record<string, unknown> | undefined {
  return typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Record<string, unknown>) : undefined;
}
export function asArray(x: unknown): unknown[] | undefined {
  return Array.isArray(x) ? x : undefined;
}
export function asString(x: unknown): string | undefined {
  return typeof x === 'string' ? x : undefined;
}
export function asInt(x: unknown): number | undefined {
  return typeof x === 'number' && Number.isInteger(x) ? x : undefined;
}

/** "a list", "the number 3", "null" ... for messages about a value's type */
export function describeValue(x: unknown): string {
  if (x === null) return 'nothing (null)';
  if (Array.isArray(x)) return 'a list';
  switch (typeof x) {
    case 'string':
      return `the string ${quote(x)}`;
    case 'number':
      return `the number ${x}`;
    case 'boolean':
      return `${x}`;
    case 'object':
      return 'an object';
    default:
      return typeof x;
  }
}

export function quote(s: string): string {
  return `'${printable(s.length > 60 ? `${s.slice(0, 57)}...` : s)}'`;
}

/**
 * Text safe to print in a message: control characters (C0 but tab, DEL, C1),
 * line and paragraph separators and U+FFFD written as escapes (\n, \x1b,
 * \u2028), so no spec can move the cursor or garble a terminal.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\ufffd]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

export function list(items: readonly string[]): string {
  return items.length === 0 ? 'none' : items.join(', ');
}

/** Levenshtein distance, for "did you mean" hints */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

// ------------------------------------------------------------ IPv4

/** Dotted quad -> 32-bit unsigned number, or undefined. No leading zeros, no shorthand. */
export function parseIpv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

export interface Cidr {
  addr: number;
  /** undefined when the text had no "/len" */
  len: number | undefined;
}

/** "10.0.0.1/24" or "10.0.0.1"; undefined if malformed */
export function parseCidr(s: string): Cidr | undefined {
  const m = /^([^/]*)(?:\/(0|[1-9][0-9]?))?$/.exec(s);
  if (!m) return undefined;
  const addr = parseIpv4(m[1]!);
  if (addr === undefined) return undefined;
  if (m[2] === undefined) return { addr, len: undefined };
  const len = Number(m[2]);
  return len > 32 ? undefined : { addr, len };
}

export function networkOf(addr: number, len: number): number {
  return (addr & maskOf(len)) >>> 0;
}

// ------------------------------------------------------------ MAC

/** "02:00:0A:00:00:01" -> "02:00:0a:00:00:01", or undefined if malformed */
export function normalizeMac(s: string): string | undefined {
  return /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s) ? s.toLowerCase() : undefined;
}

/** 02:00 followed by the address's four bytes (the netns lab's convention) */
export function macFromIpv4(addr: number): string {
  const b = [0x02, 0x00, addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
