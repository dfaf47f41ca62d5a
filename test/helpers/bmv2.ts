/**
 * A BMv2 simple_switch_grpc for a test, in a fresh network namespace, with
 * its ports wired by veth pairs to a second ("host") namespace where the test
 * sends and captures real frames. Everything — the switch process (by its
 * pid), both namespaces, the temporary folder with the gRPC socket, the
 * notification socket and the log — goes away on teardown, also when the
 * setup fails halfway.
 *
 * simple_switch_grpc is looked up on PATH only; without it, `bmv2Skip` is
 * the reason tests print when they skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { createNetns, createVeth, deleteNetns, inNetns } from '../../src/net/iproute.js';
import { uniqueName } from './env.js';


export const simpleSwitchGrpc: string | undefined = commandPath('simple_switch_grpc');
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : commandPath('python3');

/** false when BMv2 tests can run, else why they skip. */
export const bmv2Skip: false | string = !simpleSwitchGrpc
  ? 'simple_switch_grpc is not installed (see README "P4 on BMv2")'
  : !python
    ? 'python3 is needed to send and capture frames'
    : process.getuid?.() !== 0
      ? 'BMv2 tests create network namespaces: run them as root'
      : false;

export interface Bmv2Port {
  /** BMv2 port number */
  port: number;
  /** the switch side of the veth pair (in switchNetns) */
  switchIf: string;
  /** the host side (in hostNetns), where frames are sent and captured */
  hostIf: string;
  /** MAC of the host side */
  hostMac: string;
}

export interface Bmv2 {
  /** gRPC target of its P4Runtime server */
  address: string;
  deviceId: number;
  cpuPort: number;
  switchNetns: string;
  hostNetns: string;
  ports: Bmv2Port[];
  dir: string;
  /** the switch's log so far */
  log(): string;
  /**
   * Sends frames out of host interfaces (into the switch) and captures what
   * arrives on `capture` interfaces until `expect` frames came in total
   * (then for `lingerMs` more, so extra frames show), or `timeoutMs` passed.
   * `onReady` runs once the capture sockets are bound (e.g. to send a
   * packet-out that must be seen).
   */
  exchange(options: ExchangeOptions): Promise<Record<string, Buffer[]>>;
}

export interface ExchangeOptions {
  send?: { ifname: string; frames: readonly Buffer[] }[];
  capture?: readonly string[];
  expect?: number;
  timeoutMs?: number;
  lingerMs?: number;
  onReady?: () => void;
}

// Raw AF_PACKET sockets: bind the capture sockets first, send, then read
// until the expected number of incoming frames arrived (+ linger) or timeout.
const EXCHANGE_PY = `
import json, socket, select, sys, time
req = json.load(sys.stdin)
ETH_P_ALL = 3
caps = {}
for ifname in req['capture']:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    caps[s] = ifname
out = {ifname: [] for ifname in req['capture']}
sys.stdout.write('ready\\n')
sys.stdout.flush()
for item in req['send']:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((item['ifname'], 0))
    for f in item['frames']:
        s.send(bytes.fromhex(f))
    s.close()
total = 0
deadline = time.monotonic() + req['timeoutMs'] / 1000.0
linger_until = None if req['expect'] > 0 else time.monotonic() + req['lingerMs'] / 1000.0
while caps:
    now = time.monotonic()
    end = deadline if linger_until is None else min(deadline, linger_until)
    if now >= end:
        break
    ready, _, _ = select.select(list(caps), [], [], end - now)
    for s in ready:
        data, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        out[caps[s]].append(data.hex())
        total += 1
        if linger_until is None and total >= req['expect']:
            linger_until = time.monotonic() + req['lingerMs'] / 1000.0
json.dump(out, sys.stdout)
`;
import { commandPath } from '../../src/util/command.js';

/** Runs `cmd` in `netns` with `input` on its stdin; resolves with its stdout when it exits 0 (SIGKILLed after `timeoutMs`). */
export function runIn(netns: string, cmd: string, args: readonly string[], input: string, timeoutMs: number, onReady?: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    let ready = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!ready && out.startsWith('ready\n')) {
        ready = true;
        out = out.slice('ready\n'.length);
        onReady?.();
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} in ${netns} failed (${code ?? signal}): ${err.trim()}`));
    });
    child.stdin.end(input);
  });
}

function disableIpv6(netns: string): void {
  // no router solicitations or MLD reports: the only frames on the wires are the test's
  inNetns(netns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
}

function waitForSocket(file: string, child: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`simple_switch_grpc exited (${child.exitCode ?? child.signalCode}) before serving:\n${log().slice(-2000)}`));
        return;
      }
      if (Date.now() > deadline) {
        reject(new Error(`simple_switch_grpc did not open ${file} within ${timeoutMs} ms:\n${log().slice(-2000)}`));
        return;
      }
      const s = net.connect(file);
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  const pid = child.pid;
  return new Promise((resolve) => {
    const kill = setTimeout(() => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      clearTimeout(kill);
      resolve();
    }
  });
}

/**
 * Starts simple_switch_grpc without a pipeline (--no-p4), ports 1..n wired
 * to the host namespace, CPU port 255. Call only when bmv2Skip is false.
 */
export async function startBmv2(t: Test, options: { ports?: number; deviceId?: number } = {}): Promise<Bmv2> {
  if (bmv2Skip !== false) throw new Error(bmv2Skip);
  const nPorts = options.ports ?? 2;
  const deviceId = options.deviceId ?? 1;
  const cpuPort = 255;
  const tag = uniqueName('p4rt');
  const switchNetns = `${tag}s`;
  const hostNetns = `${tag}h`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-bmv2-'));
  const state: { child?: ChildProcess; netns: string[] } = { netns: [] };
  t.teardown(async () => {
    if (state.child) await stopProcess(state.child);
    for (const ns of state.netns.reverse()) deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  });

  for (const ns of [switchNetns, hostNetns]) {
    createNetns(ns);
    state.netns.push(ns);
    disableIpv6(ns);
  }
  const ports: Bmv2Port[] = [];
  for (let i = 1; i <= nPorts; i++) {
    const hostMac = `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
    createVeth({ name: `sw${i}`, netns: switchNetns, mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}` }, { name: `h${i}`, netns: hostNetns, mac: hostMac });
    ports.push({ port: i, switchIf: `sw${i}`, hostIf: `h${i}`, hostMac });
  }

  const socket = path.join(dir, 'grpc.sock');
  const logBase = path.join(dir, 'bmv2');
  const logFile = `${logBase}.txt`; // BMv2 appends .txt
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const args = [
    'netns', 'exec', switchNetns, simpleSwitchGrpc!,
    '--device-id', String(deviceId),
    '--no-p4',
    ...ports.flatMap((p) => ['-i', `${p.port}@${p.switchIf}`]),
    '--thrift-port', '9090', // per namespace: parallel switches do not collide
    '--notifications-addr', `ipc://${path.join(dir, 'notifications.ipc')}`,
    '--log-file', logBase,
    '--log-level', 'info',
    '--log-flush',
    '--',
    '--cpu-port', String(cpuPort),
    '--grpc-server-addr', `unix:${socket}`,
  ];
  const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'ignore'] });
  state.child = child;
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  await waitForSocket(socket, child, 15_000, log);

  return {
    address: `unix:${socket}`,
    deviceId,
    cpuPort,
    switchNetns,
    hostNetns,
    ports,
    dir,
    log,
    async exchange(o: ExchangeOptions): Promise<Record<string, Buffer[]>> {
      const req = {
        send: (o.send ?? []).map((s) => ({ ifname: s.ifname, frames: s.frames.map((f) => f.toString('hex')) })),
        capture: o.capture ?? [],
        expect: o.expect ?? 0,
        timeoutMs: o.timeoutMs ?? 3000,
        lingerMs: o.lingerMs ?? 300,
      };
      const out = await runIn(hostNetns, python!, ['-c', EXCHANGE_PY], JSON.stringify(req), req.timeoutMs + 10_000, o.onReady);
      const parsed = JSON.parse(out) as Record<string, string[]>;
      return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, v.map((h) => Buffer.from(h, 'hex'))]));
    },
  };
}

export interface TlsBmv2 {
  /** the private namespace it runs in (its Thrift server binds 0.0.0.0:9090 there) */
  netns: string;
  /** host:port of its P4Runtime server, inside `netns` */
  address: string;
  deviceId: number;
  /** the switch's log so far */
  log(): string;
}

/**
 * Starts simple_switch_grpc without a pipeline in a namespace of its own,
 * its P4Runtime server on 127.0.0.1:`port` there with TLS and client
 * authentication (--grpc-server-with-client-auth: a client certificate
 * signed by `ca`). The process (by its pid), the namespace and the folder
 * go on teardown, also when the start fails. Call only when bmv2Skip is false.
 */
export async function startTlsBmv2(t: Test, o: { ca: string; cert: string; key: string; port?: number; deviceId?: number }): Promise<TlsBmv2> {
  if (bmv2Skip !== false) throw new Error(bmv2Skip);
  const port = o.port ?? 9559;
  const deviceId = o.deviceId ?? 1;
  const netns = uniqueName('p4tls');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-bmv2-tls-'));
  const state: { child?: ChildProcess; netns?: string } = {};
  t.teardown(async () => {
    // the switch first: it must not outlive its namespace's name
    if (state.child) await stopProcess(state.child);
    if (state.netns !== undefined) deleteNetns(state.netns);
    rmSync(dir, { recursive: true, force: true });
  });
  state.netns = netns; // before it exists: a half-made one goes too
  createNetns(netns); // with lo up
  const logBase = path.join(dir, 'bmv2');
  const log = (): string => (existsSync(`${logBase}.txt`) ? readFileSync(`${logBase}.txt`, 'utf8') : '');
  const args = [
    'netns', 'exec', netns, simpleSwitchGrpc!,
    '--device-id', String(deviceId),
    '--no-p4',
    '--thrift-port', '9090',
    '--notifications-addr', `ipc://${path.join(dir, 'notifications.ipc')}`,
    '--log-file', logBase,
    '--log-level', 'info',
    '--log-flush',
    '--',
    '--grpc-server-addr', `127.0.0.1:${port}`,
    '--grpc-server-ssl',
    '--grpc-server-cacert', o.ca,
    '--grpc-server-cert', o.cert,
    '--grpc-server-key', o.key,
    '--grpc-server-with-client-auth',
  ];
  const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  state.child = child;
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  // listening is seen from inside the namespace (ss), the port being there only
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`simple_switch_grpc exited (${child.exitCode ?? child.signalCode}) before serving: ${stderr.trim()}\n${log().slice(-2000)}`);
    if (inNetns(netns, 'ss', ['-Htln', `sport = :${port}`]).trim() !== '') break;
    if (Date.now() > deadline) throw new Error(`simple_switch_grpc did not listen on 127.0.0.1:${port} in ${netns} within 20 s:\n${log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { netns, address: `127.0.0.1:${port}`, deviceId, log };
}
