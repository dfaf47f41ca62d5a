/**
 * A long-lived TCP transfer across a lab: a receiver in one namespace, a
 * sender in another (python3, real sockets), each hashing every byte
 * (sha256) so the two ends can be compared; both report as JSON. Processes
 * are killed on teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';

export interface TcpReceiverReport {
  peer: [string, number] | null;
  bytes: number;
  sha256: string;
  error: string | null;
  /** connections accepted after the first one ended (must be 0) */
  extraConnections: number;
  seconds: number;
}

export interface TcpSenderReport {
  local: [string, number] | null;
  bytes: number;
  sha256: string;
  error: string | null;
  seconds: number;
}

const RECEIVER = `
import socket, hashlib, json, sys, time
host, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(4); s.settimeout(30)
print(json.dumps({'ready': True}), flush=True)
h = hashlib.sha256(); n = 0; err = None; peer = None; t0 = None
try:
    c, peer = s.accept(); t0 = time.time(); c.settimeout(idle)
    while True:
        d = c.recv(1 << 20)
        if not d: break
        h.update(d); n += len(d)
    c.close()
except Exception as e:
    err = repr(e)
extra = 0
s.settimeout(0.3)
try:
    while True:
        s.accept(); extra += 1
except Exception:
    pass
print(json.dumps({'peer': peer, 'bytes': n, 'sha256': h.hexdigest(), 'error': err, 'extraConnections': extra, 'seconds': (time.time() - t0) if t0 else 0}), flush=True)
`;

const SENDER = `
import socket, hashlib, json, sys, time, os
src, sport, dst, dport, total, rate, idle = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport)); s.settimeout(idle)
h = hashlib.sha256(); sent = 0; err = None; local = None
t0 = time.time()
try:
    s.connect((dst, dport)); local = s.getsockname()
    print(json.dumps({'connected': True}), flush=True)
    while sent < total:
        chunk = os.urandom(min(1 << 18, total - sent))
        s.sendall(chunk); h.update(chunk); sent += len(chunk)
        if rate > 0:
            ahead = sent / rate - (time.time() - t0)
            if ahead > 0: time.sleep(ahead)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536): pass
    s.close()
except Exception as e:
    err = repr(e)
print(json.dumps({'local': local, 'bytes': sent, 'sha256': h.hexdigest(), 'error': err, 'seconds': time.time() - t0}), flush=True)
`;

function py(t: Test, netns: string, script: string, args: readonly (string | number)[]): { child: ChildProcess; lines: AsyncIterator<string>; last: Promise<string> } {
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, 'python3', '-u', '-c', script, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const rl = createInterface({ input: child.stdout! });
  const all: string[] = [];
  rl.on('line', (l) => all.push(l));
  const last = new Promise<string>((resolve, reject) =>
    child.once('close', (code) => (all.length > 0 ? resolve(all[all.length - 1]!) : reject(new Error(`python in ${netns} exited ${code} without a report: ${stderr}`)))),
  );
  return { child, lines: rl[Symbol.asyncIterator](), last };
}

export interface TcpTransfer {
  /** resolves once the sender has connected */
  connected: Promise<void>;
  /** both reports once both ends are done */
  done: Promise<{ sender: TcpSenderReport; receiver: TcpReceiverReport }>;
  /** whether the sender is still running */
  running(): boolean;
}

/**
 * Starts a receiver in `server.netns` on server.ip:port and a sender in
 * `client.netns` bound to client.ip:sport, sending `bytes` random bytes
 * (paced to `rateBps` bytes/s if > 0). `idleS`: the socket timeout of both
 * ends (a stalled connection ends the transfer with an error after it).
 */
export async function startTcpTransfer(
  t: Test,
  o: { client: { netns: string; ip: string }; server: { netns: string; ip: string }; port: number; sport: number; bytes: number; rateBps?: number; idleS?: number },
): Promise<TcpTransfer> {
  const idle = o.idleS ?? 10;
  const rx = py(t, o.server.netns, RECEIVER, [o.server.ip, o.port, idle]);
  const first = await rx.lines.next();
  if (first.done || !String(first.value).includes('ready')) throw new Error(`receiver did not start: ${String(first.value)}`);
  const tx = py(t, o.client.netns, SENDER, [o.client.ip, o.sport, o.server.ip, o.port, o.bytes, o.rateBps ?? 0, idle]);
  let running = true;
  tx.child.once('close', () => (running = false));
  const connected = tx.lines.next().then((r) => {
    if (r.done || !String(r.value).includes('connected')) throw new Error(`sender did not connect: ${String(r.value)}`);
  });
  const done = Promise.all([tx.last, rx.last]).then(([s, r]) => ({ sender: JSON.parse(s) as TcpSenderReport, receiver: JSON.parse(r) as TcpReceiverReport }));
  return { connected, done, running: () => running };
}
