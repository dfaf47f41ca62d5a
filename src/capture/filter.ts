/**
 * What a capture keeps, as an operator says it (--port, --direction, --flow,
 * --rule, --handover, --snaplen, --count, --duration) and as the node API
 * carries it. Validation names the field and its limit; the same checks run
 * in the CLI and on the node (a request over the API is not trusted).
 */
import { SHARP_CAPTURE_MAX_SNAP, SHARP_HID_MAX, SHARP_HID_MIN } from '../generated/abi.js';
import { PROTO_NUMBERS } from '../lab/spec/types.js';

export type CaptureDirection = 'in' | 'out';

/** A 5-tuple filter; an absent field matches anything. Matches the flow either way round. */
export interface FlowFilter {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  proto?: number;
}

export interface CaptureRequest {
  /** a switch port name ("s1-vnf1") or an instance interface name */
  port?: string;
  direction?: CaptureDirection;
  flow?: FlowFilter;
  rule?: number;
  handover?: number;
  /** bytes kept of each frame */
  snaplen: number;
  /** stop after this many frames (0: no limit) */
  count: number;
  /** stop after this long (0: no limit) */
  durationMs: number;
}

export const DEFAULT_SNAPLEN = 256;
export const MAX_CAPTURE_COUNT = 100_000_000;
export const MAX_CAPTURE_DURATION_MS = 24 * 3600 * 1000;

/** A capture request or filter out of range; names the field and the limit. */
export class CaptureRequestError extends Error {
  override name = 'CaptureRequestError';
  constructor(
    readonly field: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function intIn(field: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new CaptureRequestError(field, `${field} ${v} out of range ${lo}..${hi}`);
  return v;
}

/** Checks every field of a request; returns it unchanged. */
export function checkCaptureRequest(r: CaptureRequest): CaptureRequest {
  intIn('snaplen', r.snaplen, 1, SHARP_CAPTURE_MAX_SNAP);
  intIn('count', r.count, 0, MAX_CAPTURE_COUNT);
  intIn('duration_ms', r.durationMs, 0, MAX_CAPTURE_DURATION_MS);
  if (r.rule !== undefined) intIn('rule', r.rule, 1, 0xffffffff);
  if (r.handover !== undefined) intIn('handover', r.handover, SHARP_HID_MIN, SHARP_HID_MAX);
  if (r.direction !== undefined && r.direction !== 'in' && r.direction !== 'out') throw new CaptureRequestError('direction', `direction must be 'in' or 'out', not '${String(r.direction)}'`);
  if (r.port !== undefined && (r.port === '' || r.port.length > 64)) throw new CaptureRequestError('port', `port must be a name of 1..64 characters`);
  const f = r.flow;
  if (f !== undefined) {
    for (const k of ['src', 'dst'] as const) if (f[k] !== undefined && !IPV4.test(f[k])) throw new CaptureRequestError(`flow.${k}`, `flow.${k} '${f[k]}' is not an IPv4 address`);
    for (const k of ['sport', 'dport'] as const) if (f[k] !== undefined) intIn(`flow.${k}`, f[k], 1, 65535);
    if (f.proto !== undefined) intIn('flow.proto', f.proto, 1, 255);
  }
  return r;
}

/**
 * Parses --flow: `SRC[:SPORT]>DST[:DPORT][/PROTO]`, `*` for any part, e.g.
 * `10.0.1.1:20000>10.0.2.1:9000/udp` or `*>10.0.2.1:9000`.
 */
export function parseFlowFilter(text: string): FlowFilter {
  const bad = (why: string): CaptureRequestError => new CaptureRequestError('flow', `--flow '${text}': ${why} (format SRC[:SPORT]>DST[:DPORT][/PROTO], '*' for any, e.g. 10.0.1.1:20000>10.0.2.1:9000/udp)`);
  const [ends, proto, ...more] = text.split('/');
  if (more.length > 0 || ends === undefined) throw bad('more than one /');
  const sides = ends.split('>');
  if (sides.length !== 2) throw bad("give the two ends separated by '>'");
  const f: FlowFilter = {};
  const end = (s: string, addr: 'src' | 'dst', port: 'sport' | 'dport'): void => {
    if (s === '*' || s === '') return;
    const [a, p, ...x] = s.split(':');
    if (x.length > 0) throw bad(`'${s}' has more than one ':'`);
    if (a !== undefined && a !== '*' && a !== '') {
      if (!IPV4.test(a)) throw bad(`'${a}' is not an IPv4 address`);
      f[addr] = a;
    }
    if (p !== undefined && p !== '*') {
      const n = Number(p);
      if (!/^\d+$/.test(p) || n < 1 || n > 65535) throw bad(`port '${p}' out of range 1..65535`);
      f[port] = n;
    }
  };
  end(sides[0]!, 'src', 'sport');
  end(sides[1]!, 'dst', 'dport');
  if (proto !== undefined && proto !== '*') {
    const n = (PROTO_NUMBERS as Readonly<Record<string, number>>)[proto.toLowerCase()] ?? (/^\d+$/.test(proto) ? Number(proto) : NaN);
    if (!Number.isInteger(n) || n < 1 || n > 255) throw bad(`protocol '${proto}' is neither udp, tcp, icmp nor a number 1..255`);
    f.proto = n;
  }
  return f;
}

export const formatFlowFilter = (f: FlowFilter): string => `${f.src ?? '*'}${f.sport ? `:${f.sport}` : ''}>${f.dst ?? '*'}${f.dport ? `:${f.dport}` : ''}${f.proto ? `/${f.proto}` : ''}`;
