/**
 * Option parsers shared by the commands: a bad value is a UsageError
 * (exit 2) naming the option and the value, before anything runs.
 */
import { labSpecSchema } from '../lab/spec/assets.js';
import { parseCidr, printable } from '../lab/spec/util.js';
import { UsageError } from './errors.js';

/** a value as given, quoted, control characters escaped: safe to print */
export const shown = (v: string): string => `'${printable(v)}'`;

export function int(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} must be an integer from ${min} to ${max}, got ${shown(v)}`);
    return n;
  };
}

/** A positive number of seconds (fractions allowed). */
export function seconds(name: string, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(n > 0 && n <= max)) throw new UsageError(`${name} takes a number of seconds from more than 0 to ${max}, got ${shown(v)}`);
    return n;
  };
}

/** An IPv4 address or prefix (a.b.c.d or a.b.c.d/len), as lab specs take them. */
export function ipv4Prefix(name: string): (v: string) => string {
  return (v) => {
    if (parseCidr(v) === undefined) throw new UsageError(`${name} must be an IPv4 address or prefix (a.b.c.d or a.b.c.d/0..32), got ${shown(v)} (not an IPv4 ${v.includes('/') ? 'prefix' : 'address'})`);
    return v;
  };
}

/**
 * Lab names: one rule, kept in the spec schema (definitions.labName) and
 * used for --name as well.
 */
export const LAB_NAME: { readonly pattern: RegExp; readonly rule: string } = (() => {
  const defs = labSpecSchema()['definitions'] as Record<string, { pattern: string; description: string }>;
  const d = defs['labName']!;
  return { pattern: new RegExp(d.pattern), rule: d.description };
})();

export function labName(v: string): string {
  if (!LAB_NAME.pattern.test(v)) throw new UsageError(`--name must be ${LAB_NAME.rule}, got ${shown(v)}`);
  return v;
}

/** "--name <name>" help: the rule, stated */
export const LAB_NAME_HELP = `lab name: ${LAB_NAME.rule}`;
