/**
 * The `conntrack` tool's view of a namespace's table, for tests: an oracle
 * independent of the state manager's ctnetlink code. Inserts entries with
 * one `conntrack -R FILE` batch and lists a namespace's table (formats:
 * src/state/conntrack-tool.ts).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConntrackEntry } from '../../src/state/conntrack-manager.js';
import { insertArgs, parseConntrackLine } from '../../src/state/conntrack-tool.js';

/** Inserts entries into a namespace with one `conntrack -R FILE` (a file: the tool opens /dev/stdin, which fails for a socket). */
export function toolInsert(netns: string, entries: readonly ConntrackEntry[]): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-conntrack-'));
  try {
    const file = path.join(dir, 'batch');
    writeFileSync(file, entries.map((e) => insertArgs(e).join(' ')).join('\n') + '\n');
    execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-R', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A namespace's TCP and UDP entries as the tool lists them. */
export function toolList(netns: string): ConntrackEntry[] {
  return execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-L', '-o', 'extended'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 })
    .split('\n')
    .flatMap((l) => parseConntrackLine(l) ?? []);
}
