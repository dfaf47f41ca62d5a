/**
 * Files that live next to this module's source (the schema, the default
 * spec). The build copies nothing into dist/, so from the compiled module
 * (dist/src/lab/spec/) they are found back in src/lab/spec/.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export function specAsset(file: string): string {
  const candidates = [path.join(here, file), path.resolve(here, '../../../../src/lab/spec', file)];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`${file} not found (looked in ${candidates.join(', ')})`);
}

export function schemaPath(): string {
  return specAsset('lab-spec.schema.json');
}

/** The schema document (parsed lab-spec.schema.json); here, not in schema.ts, so that reading it (the CLI's help) does not load ajv. */
export function labSpecSchema(): Record<string, unknown> {
  return JSON.parse(readFileSync(schemaPath(), 'utf8')) as Record<string, unknown>;
}
