/**
 * A private redis-server (Debian package redis-server) on a free loopback
 * port with its own temporary directory, for tests, benchmarks and
 * `--state redis` without a server of one's own. No persistence.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { StateError } from './types.js';

export interface RedisServerOptions {
  /** executable (default: redis-server from PATH) */
  bin?: string;
  /** default 127.0.0.1 */
  host?: string;
  /** default: a free port */
  port?: number;
  /** run it inside this network namespace (/run/netns/<name>); then give port (default 6379) */
  netns?: string;
  /** also listen on this Unix socket (0700 by redis: for the starting user) */
  unixSocket?: string;
  /** requirepass: clients must AUTH with it */
  password?: string;
  /** how long to wait for "ready" (default 10 s) */
  startTimeoutMs?: number;
}

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** redis://host:port */
  readonly url: string;
  readonly dir: string;
  readonly pid: number;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** The path of redis-server, or undefined with the reason it cannot be used. */
export function findRedisServer(bin = 'redis-server'): { path: string; version: string } | { reason: string } {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (r.error) return { reason: `${bin} cannot be run (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}): install the Debian package redis-server` };
  if (r.status !== 0) return { reason: `${bin} --version exited with ${r.status}: ${r.stderr.trim()}` };
  const v = /v=(\S+)/.exec(r.stdout)?.[1] ?? r.stdout.trim();
  return { path: bin, version: v };
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Stops a child: SIGCONT first (a frozen server cannot act on SIGTERM), SIGTERM, SIGKILL after timeoutMs. */
export function stopChild(child: ChildProcess, timeoutMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGCONT');
    child.kill('SIGTERM');
  });
}

/**
 * Runs redis-server with these arguments (in a network namespace when
 * given: nsenter execs it, so the child is the server itself) and waits for
 * "Ready to accept connections"; a server that exits or is not ready in
 * time is stopped and its output is in the error.
 */
export async function launchRedisServer(bin: string, args: readonly string[], o: { netns?: string | undefined; label: string; timeoutMs: number }): Promise<ChildProcess> {
  const child = o.netns === undefined ? spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('nsenter', [`--net=/run/netns/${o.netns}`, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new StateError(`redis-server ${o.label} was not ready within ${o.timeoutMs} ms:\n${out.slice(-2000)}`)), o.timeoutMs);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (e) => {
      clearTimeout(t);
      reject(new StateError(`redis-server cannot be started: ${e.message}`, { cause: e }));
    });
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      reject(new StateError(`redis-server ${o.label} exited (${sig ?? code}) before it was ready:\n${out.slice(-2000)}`));
    });
  });
  try {
    await ready;
  } catch (e) {
    await stopChild(child);
    throw e;
  }
  // keep draining its output so it never blocks on a full pipe
  child.stdout!.removeAllListeners('data');
  child.stderr!.removeAllListeners('data');
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

async function startOnce(bin: string, host: string, port: number, timeoutMs: number, o: RedisServerOptions): Promise<RedisServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharp-redis-'));
  const extra = [...(o.unixSocket === undefined ? [] : ['--unixsocket', o.unixSocket, '--unixsocketperm', '700']), ...(o.password === undefined ? [] : ['--requirepass', o.password])];
  const args = ['--port', String(port), '--bind', host, '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'yes', '--loglevel', 'notice', '--logfile', '', ...extra];
  let child: ChildProcess;
  try {
    child = await launchRedisServer(bin, args, { netns: o.netns, label: `on ${host}:${port}`, timeoutMs });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let stopped: Promise<void> | undefined;
  return {
    host,
    port,
    url: `redis://${host}:${port}`,
    dir,
    pid: child.pid!,
    stop(): Promise<void> {
      stopped ??= stopChild(child).then(() => rmSync(dir, { recursive: true, force: true }));
      return stopped;
    },
  };
}

/** Starts redis-server; retries on another port if the chosen one was taken meanwhile. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const bin = options.bin ?? 'redis-server';
  const found = findRedisServer(bin);
  if ('reason' in found) throw new StateError(found.reason);
  const host = options.host ?? '127.0.0.1';
  let last: unknown;
  for (let i = 0; i < (options.port === undefined ? 5 : 1); i++) {
    const port = options.port ?? (options.netns === undefined ? await freePort(host) : 6379);
    try {
      return await startOnce(bin, host, port, options.startTimeoutMs ?? 10_000, options);
    } catch (e) {
      last = e;
      if (!(e instanceof Error) || !/Address already in use|bind/i.test(e.message)) break;
    }
  }
  throw last;
}
