/**
 * `sharpctl compile`: builds the data-plane programs. XDP: clang, one object
 * per ebpf/*.bpf.c, rebuilt when the source or a shared header is newer.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, objectsDir } from './paths.js';
import { EnvironmentError } from './errors.js';

export interface CompileResult {
  target: 'xdp' | 'bmv2';
  /** where `built` and `upToDate` are, relative to the repository */
  dir: string;
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
  return { target: 'xdp', dir: path.relative(repoRoot, objectsDir), built, upToDate };
}

const P4_DIR = 'p4/build';
const P4_SOURCES = ['p4/sharp.p4', 'p4/sharp_abi.p4'];
const P4_ARTIFACTS = ['sharp.json', 'sharp.p4info.json', 'sharp.p4info.txtpb'];
const sha256 = (file: string): string => createHash('sha256').update(readFileSync(path.join(repoRoot, file))).digest('hex');

/** Whether p4/build holds the artifacts of the current P4 sources; else why not. */
function p4Artifacts(): { fresh: true } | { fresh: false; why: string } {
  const missing = P4_ARTIFACTS.filter((f) => !existsSync(path.join(repoRoot, P4_DIR, f)));
  if (missing.length) return { fresh: false, why: `${P4_DIR} has no ${missing.join(', ')}` };
  const listFile = path.join(repoRoot, P4_DIR, 'sources.sha256');
  if (!existsSync(listFile)) return { fresh: false, why: `${P4_DIR}/sources.sha256 is missing` };
  for (const line of readFileSync(listFile, 'utf8').trim().split('\n')) {
    const [hash, file] = line.split(/\s+/);
    if (file === undefined || !existsSync(path.join(repoRoot, file))) return { fresh: false, why: `${P4_DIR}/sources.sha256 names ${file ?? 'nothing'}, which does not exist` };
    if (sha256(file) !== hash) return { fresh: false, why: `${file} changed since ${P4_DIR} was built` };
  }
  return { fresh: true };
}

/**
 * BMv2: the BMv2 JSON and the P4Info of p4/sharp.p4 in p4/build. They are
 * committed with the hash of their sources; p4c (when installed) rebuilds
 * them when the sources changed or with `force` (as `make p4` does).
 */
export function compileBmv2(force = false): CompileResult {
  let p4c = false;
  try {
    execFileSync('p4c', ['--version'], { stdio: 'ignore' });
    p4c = true;
  } catch {
    p4c = false;
  }
  const state = p4Artifacts();
  const base = { target: 'bmv2' as const, dir: P4_DIR };
  if (state.fresh && !force) {
    return {
      ...base,
      built: [],
      upToDate: [...P4_ARTIFACTS],
      note: `${p4c ? 'p4c is installed' : 'p4c is not installed'}: the artifacts in ${P4_DIR} match the P4 sources (${P4_DIR}/sources.sha256) and are what --target bmv2 loads`,
    };
  }
  if (!p4c) {
    const where = '(it is in no package registry; see README "P4 on BMv2")';
    throw new EnvironmentError(state.fresh ? `cannot rebuild ${P4_DIR} (--force): p4c is not installed ${where}` : `${state.why}, and p4c is not installed to rebuild it ${where}`);
  }
  const out = path.join(repoRoot, P4_DIR);
  mkdirSync(out, { recursive: true });
  try {
    execFileSync(
      'p4c',
      ['--target', 'bmv2', '--arch', 'v1model', '--p4runtime-files', `${path.join(out, 'sharp.p4info.txtpb')},${path.join(out, 'sharp.p4info.json')}`, '-o', out, path.join(repoRoot, 'p4/sharp.p4')],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new CompileError('p4/sharp.p4', err.stderr?.toString() ?? err.message);
  }
  writeFileSync(path.join(out, 'sources.sha256'), P4_SOURCES.map((f) => `${sha256(f)}  ${f}\n`).join(''));
  return { ...base, built: [...P4_ARTIFACTS], upToDate: [] };
}
