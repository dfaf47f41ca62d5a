/**
 * The real CLI as a child process (asynchronous, so a test can signal it or
 * serve it), and a stand-in for a lab daemon: a Unix socket that answers as
 * the test says, found by the CLI through a run directory of its own.
 */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import net from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { repoRoot } from './env.js';

export const cli = path.join(repoRoot, 'dist/src/cli/main.js');

export interface SyncExit {
  code: number | null;
  stdout: string;
  stderr: string;
  /** set when it had to be killed (timeout) */
  error?: Error;
}

/** Runs the CLI to the end (SIGKILLed after `timeout`); `as: 'nobody'` drops root first. */
export function runSync(args: readonly string[], o: { as?: 'nobody'; timeout?: number; env?: Record<string, string> } = {}): SyncExit {
  const argv = [process.execPath, cli, ...args];
  // tap adds its process-info hook to every child's NODE_OPTIONS; it writes into .tap/, which nobody may not
  const [cmd, ...rest] = o.as === 'nobody' ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'env', '-u', 'NODE_OPTIONS', ...argv] : argv;
  const r = spawnSync(cmd!, rest, { encoding: 'utf8', timeout: o.timeout ?? 60_000, killSignal: 'SIGKILL', cwd: repoRoot, env: { ...process.env, ...o.env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ...(r.error ? { error: r.error } : {}) };
}

/** stdout as exactly one {error: {name, message}} object */
export function jsonError(stdout: string): { name: string; message: string } | undefined {
  try {
    const e = (JSON.parse(stdout) as { error?: { name?: unknown; message?: unknown } }).error;
    return typeof e?.name === 'string' && typeof e.message === 'string' ? { name: e.name, message: e.message } : undefined;
  } catch {
    return undefined;
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** killed by the guard: it did not exit in time */
  hung: boolean;
}

export interface Running {
  child: ChildProcessByStdio<null, Readable, Readable>;
  exited: Promise<Exit>;
  /** resolves with the first stdout output */
  firstOutput: Promise<string>;
}

/** Starts the CLI; SIGKILLs it (and reports `hung`) if it is still running after `guardMs`. */
export function start(args: readonly string[], o: { env?: Record<string, string>; guardMs?: number } = {}): Running {
  const child = spawn(process.execPath, [cli, ...args], { cwd: repoRoot, env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let hung = false;
  let gotOutput: (s: string) => void = () => undefined;
  const firstOutput = new Promise<string>((r) => (gotOutput = r));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    gotOutput(stdout);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const guard = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL'); // our own child
  }, o.guardMs ?? 20_000);
  const exited = new Promise<Exit>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, stdout, stderr, hung });
    }),
  );
  return { child, exited, firstOutput };
}

export interface Request {
  method: string;
  params?: unknown;
}

/** What the stand-in does with a request: answer, stay silent, hang up. */
export type Behaviour = (req: Request & { id: number }, sock: net.Socket) => void;

export const silent: Behaviour = () => undefined;
export const hangUp: Behaviour = (_req, sock) => sock.destroy();

export interface FakeDaemon {
  name: string;
  runDir: string;
  socket: string;
  env: Record<string, string>;
  /** resolves when the next request arrives */
  nextRequest(): Promise<Request>;
  close(): Promise<void>;
}

/** A Unix socket server that hands each line it receives to `onLine`; close() hangs up on everyone. */
export async function lineServer(socket: string, onLine: (line: string, sock: net.Socket) => void): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    sock.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        onLine(line, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return {
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A lab daemon stand-in: state.json says lab `name` is ready, with this process as its daemon. */
export async function fakeDaemon(behaviour: Behaviour): Promise<FakeDaemon> {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-fake-'));
  const name = `zt${randomBytes(3).toString('hex')}`;
  const dir = path.join(runDir, name);
  mkdirSync(dir);
  const socket = path.join(dir, 'ctl.sock');
  let waiting: ((r: Request) => void)[] = [];
  const server = await lineServer(socket, (line, sock) => {
    const req = JSON.parse(line) as Request & { id: number };
    const w = waiting;
    waiting = [];
    for (const f of w) f(req);
    behaviour(req, sock);
  });
  writeFileSync(
    path.join(dir, 'state.json'),
    JSON.stringify({ name, pid: process.pid, prefix: `sharp-${name}-`, status: 'ready', startedAt: new Date().toISOString(), socket, namespaces: [], target: 'xdp' }),
  );
  return {
    name,
    runDir,
    socket,
    env: { SHARPCTL_RUN_DIR: runDir },
    nextRequest: () => new Promise<Request>((r) => waiting.push(r)),
    close: async () => {
      await server.close();
      rmSync(runDir, { recursive: true, force: true });
    },
  };
}

/** A minimal answer to `status`. */
export function reply(sock: net.Socket, id: number, result: unknown): void {
  sock.write(JSON.stringify({ id, result }) + '\n');
}
export const EMPTY_STATUS = { rules: [], active: [], traffic: [] };

/**
 * A lab the test drives through the real CLI, in a run directory of its own
 * (SHARPCTL_RUN_DIR in `env`), named `<tag><6 hex>`: at the end `lab down`,
 * then whatever namespace of its prefix is left, then the run directory.
 */
export function cliLab(t: { teardown(fn: () => void | Promise<void>): void }, tag: string): { name: string; prefix: string; runDir: string; env: NodeJS.ProcessEnv } {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
  const name = `${tag}${randomBytes(3).toString('hex')}`;
  const prefix = `sharp-${name}-`;
  const env = { ...process.env, SHARPCTL_RUN_DIR: runDir };
  t.teardown(async () => {
    spawnSync(process.execPath, [cli, 'lab', 'down', '--name', name], { env, timeout: 60_000 });
    const { listNetns, deleteNetns } = await import('../../src/net/iproute.js');
    for (const ns of listNetns(prefix)) deleteNetns(ns);
    rmSync(runDir, { recursive: true, force: true });
  });
  return { name, prefix, runDir, env };
}
