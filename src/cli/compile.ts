/**
 * `sharpctl compile`: builds the data-plane programs. XDP: clang, one object
 * per ebpf/*.bpf.c, rebuilt when the source or a shared header is newer.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, objectsDir } from './paths.js';

export interface CompileResult {
  target: 'xdp' | 'bmv2';
  built: string[];
  upToDate: string[];
  note?: string;
}

export class CompileError extends Error {
  override name = 'CompileError';
  constructor(
    readonly file: string,
    readonly output: string,
  ) {
    super(`${file} did not compile:\n${output.trim()}`);
  }
}

function archInclude(): string {
  try {
    return `/usr/include/${execFileSync('gcc', ['-dumpmachine'], { encoding: 'utf8' }).trim()}`;
  } catch {
    return '/usr/include/x86_64-linux-gnu';
  }
}

export function compileXdp(force = false): CompileResult {
  const src = path.join(repoRoot, 'ebpf');
  const inc = path.join(src, 'include');
  const headersMtime = Math.max(...readdirSync(inc).map((f) => statSync(path.join(inc, f)).mtimeMs));
  mkdirSync(objectsDir, { recursive: true });
  const built: string[] = [];
  const upToDate: string[] = [];
  for (const f of readdirSync(src).filter((x) => x.endsWith('.bpf.c')).sort()) {
    const out = path.join(objectsDir, f.replace(/\.c$/, '.o'));
    const srcMtime = Math.max(statSync(path.join(src, f)).mtimeMs, headersMtime);
    if (!force && existsSync(out) && statSync(out).mtimeMs >= srcMtime) {
      upToDate.push(path.basename(out));
      continue;
    }
    try {
      execFileSync('clang', ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', '-mcpu=v3', '-D__TARGET_ARCH_x86', '-I', inc, '-I', archInclude(), '-c', path.join(src, f), '-o', out], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      throw new CompileError(f, err.stderr?.toString() ?? err.message);
    }
    built.push(path.basename(out));
  }
  return { target: 'xdp', built, upToDate };
}

export function compileBmv2(): CompileResult {
  let p4c = false;
  try {
    execFileSync('p4c', ['--version'], { stdio: 'ignore' });
    p4c = true;
  } catch {
    p4c = false;
  }
  return {
    target: 'bmv2',
    built: [],
    upToDate: [],
    note: p4c
      ? 'p4c is installed, but this build has no P4 program yet (the P4 data plane is not part of it)'
      : 'p4c is not installed and this build has no committed P4 artifacts yet (the P4 data plane is not part of it)',
  };
}
