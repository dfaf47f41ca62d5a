/** The NAT tests' figures, one key each, in results/linux-nat.json (the README quotes them). */
import path from 'node:path';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { repoRoot } from './env.js';

export function saveNatFigures(key: string, v: unknown): void {
  const dir = path.join(repoRoot, 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'linux-nat.json');
  let cur: Record<string, unknown> = {};
  try {
    cur = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    cur = {};
  }
  cur[key] = v;
  cur['measuredAt'] = new Date().toISOString();
  writeFileSync(file, `${JSON.stringify(cur, null, 2)}\n`);
}
