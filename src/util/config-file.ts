/**
 * What node configs and deployment specs share: a file problem names the
 * file and every issue, ajv's errors in plain words with their path, and a
 * bounded read of a regular YAML or JSON file.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';

export class ConfigFileError extends Error {
  override name = 'ConfigFileError';
  constructor(
    readonly file: string,
    readonly issues: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`${file}: ${issues.length === 1 ? issues[0] : `${issues.length} problems:\n  ${issues.join('\n  ')}`}`, options);
  }
}

/** One ajv error as "path: what is wrong". */
export function describeAjvError(e: ErrorObject): string {
  const at = e.instancePath === '' ? '(top level)' : e.instancePath.slice(1).replaceAll('/', '.');
  if (e.keyword === 'additionalProperties') return `${at}: unknown field '${String((e.params as { additionalProperty: string }).additionalProperty)}'`;
  if (e.keyword === 'required') return `${at}: missing field '${String((e.params as { missingProperty: string }).missingProperty)}'`;
  if (e.keyword === 'enum') return `${at}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  return `${at}: ${e.message ?? e.keyword}`;
}

/** Parses a regular file of at most `maxBytes` as JSON (.json) or YAML; problems become `fail(issues, cause)`. */
export function readConfigFile(file: string, maxBytes: number, what: string, fail: (issues: string[], cause?: unknown) => Error): unknown {
  let st;
  try {
    st = statSync(file);
  } catch (e) {
    throw fail([`cannot read it: ${(e as NodeJS.ErrnoException).code ?? String(e)}`], e);
  }
  if (!st.isFile()) throw fail(['not a regular file']);
  if (st.size > maxBytes) throw fail([`${st.size} bytes: ${what} is at most ${maxBytes} bytes`]);
  const json = path.extname(file) === '.json';
  try {
    const text = readFileSync(file, 'utf8');
    return json ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw fail([`not valid ${json ? 'JSON' : 'YAML'}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`], e);
  }
}
