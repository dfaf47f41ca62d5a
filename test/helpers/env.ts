/** Paths and unique names for tests. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

/** the repository root (tests run from dist/test/...) */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function testObject(name: string): string {
  return path.join(repoRoot, 'build/test-ebpf', `${name}.bpf.o`);
}

export function programObject(name: string): string {
  return path.join(repoRoot, 'build/ebpf', `${name}.bpf.o`);
}

/** Every namespace and bpffs path a test creates starts with this. */
export const TEST_PREFIX = 'sharpt-';

/** A short unique name: parallel runs never collide. */
export function uniqueName(tag: string): string {
  return `${TEST_PREFIX}${tag}-${process.pid.toString(36)}${randomBytes(3).toString('hex')}`;
}
