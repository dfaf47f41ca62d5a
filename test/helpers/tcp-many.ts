/**
 * Many concurrent TCP connections across a lab: one receiver process in the
 * server's namespace accepting them all, one sender process in the client's
 * namespace opening `connections` sockets bound to client.ip:basePort+i,
 * each streaming random bytes (one chunk per connection per round, the
 * connections' chunks spread over the round) until told to stop; both ends
 * hash every byte per connection (sha256) and report per connection as
 * JSON. python3 with selectors (real sockets, two processes in all).
 * Processes are killed on teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';

export interface ManyReceiverConnection {
  peer: [string, number];
  bytes: number;
  sha256: string;
  /** a socket error (a reset is ConnectionResetError), or null */
  error: string | null;
  /** the peer closed its side (clean end of stream) */
  eof: boolean;
}

export interface ManyReceiverReport {
  /** connections accepted in all */
  accepted: number;
  connections: ManyReceiverConnection[];
  error: string | null;
}

export interface ManySenderConnection {
  local: [string, number];
  bytes: number;
  sha256: string;
  error: string | null;
}

export interface ManySenderReport {
  connections: ManySenderConnection[];
  rounds: number;
  error: string | null;
}

const RECEIVER = `
import socket, hashlib, json, sys, time, selectors, resource
host, port, n, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port)); ls.listen(4096); ls.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ, None)
print(json.dumps({'ready': True}), flush=True)
conns = []; open_ = 0; err = None; last = time.time()
try:
    while True:
        if len(conns) >= n and open_ == 0: break
        if time.time() - last > idle: err = 'idle for %ss with %d of %d connections open' % (idle, open_, len(conns)); break
        for key, _ in sel.select(0.2):
            if key.data is None:
                while True:
                    try: c, peer = ls.accept()
                    except BlockingIOError: break
                    c.setblocking(False)
                    st = {'peer': list(peer), 'bytes': 0, 'h': hashlib.sha256(), 'error': None, 'eof': False}
                    conns.append(st); open_ += 1; last = time.time()
                    sel.register(c, selectors.EVENT_READ, st)
                continue
            st = key.data; c = key.fileobj
            try:
                d = c.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError as e:
                st['error'] = repr(e); d = None
            last = time.time()
            if d:
                st['h'].update(d); st['bytes'] += len(d); continue
            if d == b'': st['eof'] = True
            sel.unregister(c); c.close(); open_ -= 1
except Exception as e:
    err = repr(e)
out = [{'peer': s['peer'], 'bytes': s['bytes'], 'sha256': s['h'].hexdigest(), 'error': s['error'], 'eof': s['eof']} for s in conns]
print(json.dumps({'accepted': len(conns), 'connections': out, 'error': err}), flush=True)
`;

const SENDER = `
import socket, hashlib, json, sys, time, os, selectors, resource
src, base, n, dst, dport, chunk, every, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
conns = []; err = None; rounds = 0
def flush(st):
    while st['pending'] and st['error'] is None:
        try:
            k = st['sock'].send(st['pending'])
        except BlockingIOError:
            return
        except OSError as e:
            st['error'] = repr(e); return
        st['pending'] = st['pending'][k:]
try:
    for i in range(n):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, base + i)); s.settimeout(idle); s.connect((dst, dport)); s.setblocking(False)
        conns.append({'sock': s, 'local': list(s.getsockname()), 'bytes': 0, 'h': hashlib.sha256(), 'pending': b'', 'error': None})
    print(json.dumps({'connected': n}), flush=True)
    stdin = selectors.DefaultSelector(); stdin.register(sys.stdin, selectors.EVENT_READ)
    stop = False; t0 = time.time()
    # round r: connection i gets its chunk at t0 + (r + i/n) * every; stop (a line or EOF on stdin) ends after a whole round
    while not stop:
        for i, st in enumerate(conns):
            due = t0 + (rounds + i / n) * every
            wait = due - time.time()
            if wait > 0: time.sleep(wait)
            if st['error'] is None:
                d = os.urandom(chunk); st['h'].update(d); st['bytes'] += len(d); st['pending'] += d
            for x in conns[max(0, i - 8):i + 1]: flush(x)
        rounds += 1
        if stdin.select(0): stop = True
    # everything queued goes out, then each side is closed and the receiver's close awaited
    sel = selectors.DefaultSelector(); deadline = time.time() + idle
    for st in conns:
        flush(st)
        if st['pending'] and st['error'] is None: sel.register(st['sock'], selectors.EVENT_WRITE, st)
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(0.2):
            flush(key.data)
            if not key.data['pending'] or key.data['error'] is not None: sel.unregister(key.fileobj)
    sel = selectors.DefaultSelector()
    for st in conns:
        if st['error'] is not None: continue
        try:
            st['sock'].shutdown(socket.SHUT_WR); sel.register(st['sock'], selectors.EVENT_READ, st)
        except OSError as e:
            st['error'] = repr(e)
    deadline = time.time() + idle
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(0.2):
            try:
                d = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                key.data['error'] = repr(e); d = b''
            if d == b'': sel.unregister(key.fileobj)
    for key in list(sel.get_map().values()): key.data['error'] = 'no close from the receiver within %ss' % idle
except Exception as e:
    err = repr(e)
for st in conns:
    try: st['sock'].close()
    except OSError: pass
out = [{'local': s['local'], 'bytes': s['bytes'], 'sha256': s['h'].hexdigest(), 'error': s['error']} for s in conns]
print(json.dumps({'connections': out, 'rounds': rounds, 'error': err}), flush=True)
`;

function py(t: Test, netns: string, script: string, args: readonly (string | number)[], stdin: 'ignore' | 'pipe'): { child: ChildProcess; lines: AsyncIterator<string>; last: Promise<string> } {
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, 'python3', '-u', '-c', script, ...args.map(String)], { stdio: [stdin, 'pipe', 'pipe'] });
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

export interface ManyTcpStreams {
  /** resolves once every connection is established */
  connected: Promise<void>;
  /** ends the streams (after the current round) and resolves both reports */
  stop(): Promise<{ sender: ManySenderReport; receiver: ManyReceiverReport }>;
}

/**
 * `connections` TCP connections client.ip:basePort+i → server.ip:port, each
 * sending `chunkBytes` random bytes every `everyS` seconds until stop().
 * `idleS`: how long either end waits for a stalled peer before it reports
 * an error.
 */
export async function startManyTcpStreams(
  t: Test,
  o: { client: { netns: string; ip: string }; server: { netns: string; ip: string }; port: number; basePort: number; connections: number; chunkBytes: number; everyS: number; idleS?: number },
): Promise<ManyTcpStreams> {
  if (!Number.isInteger(o.connections) || o.connections < 1 || o.basePort + o.connections > 65536) {
    throw new RangeError(`connections: ${o.connections} from basePort ${o.basePort} must be ≥ 1 and end at port ≤ 65535`);
  }
  const idle = o.idleS ?? 20;
  const rx = py(t, o.server.netns, RECEIVER, [o.server.ip, o.port, o.connections, idle], 'ignore');
  const first = await rx.lines.next();
  if (first.done || !String(first.value).includes('ready')) throw new Error(`receiver did not start: ${String(first.value)}`);
  const tx = py(t, o.client.netns, SENDER, [o.client.ip, o.basePort, o.connections, o.server.ip, o.port, o.chunkBytes, o.everyS, idle], 'pipe');
  const connected = tx.lines.next().then((r) => {
    if (r.done || !String(r.value).includes('connected')) throw new Error(`sender did not connect: ${String(r.value)}`);
  });
  const done = Promise.all([tx.last, rx.last]).then(([s, r]) => ({ sender: JSON.parse(s) as ManySenderReport, receiver: JSON.parse(r) as ManyReceiverReport }));
  return {
    connected,
    stop: () => {
      tx.child.stdin!.end('stop\n');
      return done;
    },
  };
}
