/**
 * One userspace VNF instance as a process of its own, run in the
 * instance's network namespace (fleet.ts starts it with `ip netns exec`):
 * it opens a TUN device (the native addon's tunOpen: TUNSETIFF), runs
 * UserspaceVnf (the TypeScript per-flow counter whose state is its E-State
 * node's local view) over every IP packet the stack routes into it, stamps
 * probes, fixes their UDP checksum and writes each packet back to the TUN,
 * from where the stack forwards it out of the instance's other interface.
 *
 * Packets are read one at a time and written back before the next read, so
 * the order the stack queued them in is the order they leave in.
 *
 * Run: node vnf-process.js '<json VnfProcessSpec>'. It prints one JSON
 * line (VnfProcessReady) once it serves, answers commands (protocol.ts),
 * and exits when its standard input closes (it never outlives its parent)
 * or on SIGTERM.
 */
import fs from 'node:fs';
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { bpfNative } from '../../bpf/native.js';
import { UserspaceVnf } from '../../state/userspace-vnf.js';
import { valueBytes } from '../../state/estate/proto.js';
import { parseIpv4, fixUdpChecksum } from './packet.js';
import type { VnfAnswer, VnfCommand, VnfProcessReady, VnfProcessSpec, VnfProcessStats } from './protocol.js';
import type { JsonItem } from '../../state/estate/peer-process.js';
import { toJsonValue } from '../../state/estate/peer-process.js';

const BARRIER_MAGIC = 0x53484252; // "SHBR"
const BARRIER_PORT = 9; // discard: nothing listens, the datagram never leaves the TUN
const BARRIER_TIMEOUT_MS = 5_000;
/** larger than any packet the TUN can carry (its MTU is at most 64 KiB) */
const READ_BUFFER = 65_536;

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as VnfProcessSpec;
  const tun = bpfNative.tunOpen(spec.tun);
  const vnf = await UserspaceVnf.start({ name: spec.name, estate: spec.timeoutMs === undefined ? {} : { timeoutMs: spec.timeoutMs } });
  if (spec.seed !== undefined) await vnf.store.join(spec.seed);
  const tunDropped = (): number => {
    try {
      // the process's /sys is its namespace's (ip netns exec mounts it)
      return Number(fs.readFileSync(`/sys/class/net/${tun.name}/statistics/tx_dropped`, 'utf8').trim());
    } catch {
      return -1;
    }
  };
  const stats: Omit<VnfProcessStats, 'processed' | 'stamped' | 'items' | 'tunDropped'> = { read: 0, written: 0, passedUnparsed: 0, barriers: 0, writeErrors: 0 };

  // ---- barriers: a datagram routed into the TUN behind every packet queued there
  const barrierSocket = dgram.createSocket('udp4');
  barrierSocket.on('error', () => undefined);
  let barrierSent = 0;
  let barrierSeen = 0;
  const barrierWaiters = new Map<number, () => void>();
  const barrier = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const id = ++barrierSent;
      const t = setTimeout(() => {
        barrierWaiters.delete(id);
        reject(new Error(`the barrier datagram did not come back through ${tun.name} within ${BARRIER_TIMEOUT_MS} ms`));
      }, BARRIER_TIMEOUT_MS);
      barrierWaiters.set(id, () => {
        clearTimeout(t);
        resolve();
      });
      const b = Buffer.alloc(8);
      b.writeUInt32BE(BARRIER_MAGIC, 0);
      b.writeUInt32BE(id, 4);
      barrierSocket.send(b, BARRIER_PORT, spec.barrierAddress);
    });
  const barrierReached = (id: number): void => {
    stats.barriers++;
    barrierSeen = Math.max(barrierSeen, id);
    for (const [k, done] of barrierWaiters)
      if (k <= barrierSeen) {
        barrierWaiters.delete(k);
        done();
      }
  };

  // ---- the packet path: read, process, write back, read the next
  const buf = Buffer.allocUnsafe(READ_BUFFER);
  let closing = false;
  const handle = (n: number): void => {
    stats.read++;
    const p = parseIpv4(buf, n);
    if (p === undefined) stats.passedUnparsed++;
    else if (p.flow.dst === spec.barrierAddress && p.flow.dport === BARRIER_PORT && p.payloadLength >= 8 && buf.readUInt32BE(p.payloadOffset) === BARRIER_MAGIC) {
      barrierReached(buf.readUInt32BE(p.payloadOffset + 4));
      return;
    } else if (vnf.process(p.flow, buf.subarray(p.payloadOffset, p.payloadOffset + p.payloadLength)).stamped) fixUdpChecksum(buf, p);
    try {
      fs.writeSync(tun.fd, buf, 0, n);
      stats.written++;
    } catch {
      stats.writeErrors++;
    }
  };
  let pausedUntil = 0;
  const readNext = (): void => {
    const wait = pausedUntil - Date.now();
    if (wait > 0) {
      setTimeout(readNext, wait);
      return;
    }
    fs.read(tun.fd, buf, 0, buf.length, null, (err, n) => {
      if (closing) return;
      if (err) {
        process.stderr.write(`userspace VNF ${spec.name}: reading ${tun.name} failed: ${err.message}\n`);
        quit(1);
        return;
      }
      handle(n);
      readNext();
    });
  };

  const quit = (code = 0): void => {
    if (closing) return;
    closing = true;
    barrierSocket.close();
    // the read in flight blocks a libuv worker thread: exit without waiting for it
    void vnf.store.close().finally(() => process.exit(code));
  };
  process.on('SIGTERM', () => quit(0));

  const answer = async (line: string): Promise<VnfAnswer> => {
    let n = 0;
    try {
      const c = JSON.parse(line) as { n: number } & VnfCommand;
      n = c.n;
      switch (c.op) {
        case 'barrier':
          await barrier();
          return { n };
        case 'items':
          return { n, items: vnf.store.items(c.prefix).map((i) => ({ key: i.key, value: toJsonValue(i.value), bytes: valueBytes(i.value) })) };
        case 'obtain': {
          const want = c.missingOnly === true ? c.keys.filter((k) => !vnf.store.has(k)) : c.keys;
          if (want.length === 0) return { n, adopted: [] };
          const items = await vnf.store.fetch(c.from, { keys: want }, c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs });
          const got = new Set(items.map((i) => i.key));
          const absent = want.filter((k) => !got.has(k));
          if (absent.length > 0) throw new Error(`${c.from} does not have ${absent.length} of the ${want.length} items asked for (e.g. '${absent[0]}')`);
          vnf.store.adopt(items);
          return { n, adopted: items.map((i): JsonItem => ({ key: i.key, owner: i.owner, ts: i.ts, value: toJsonValue(i.value) })) };
        }
        case 'drop':
          return { n, count: await vnf.store.drop(c.from, c.keys, c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs }) };
        case 'del': {
          let count = 0;
          for (const k of c.keys) if (vnf.store.del(k)) count++;
          return { n, count };
        }
        case 'clear': {
          let count = 0;
          for (const k of vnf.store.keys(c.prefix)) if (vnf.store.del(k)) count++;
          return { n, count };
        }
        case 'members':
          return { n, members: vnf.store.members() };
        case 'pause':
          if (!(Number.isInteger(c.ms) && c.ms >= 0 && c.ms <= 60_000)) throw new Error(`pause: ms must be an integer in 0..60000 (got ${String(c.ms)})`);
          pausedUntil = Date.now() + c.ms;
          return { n };
        case 'stats':
          return { n, stats: { ...stats, tunDropped: tunDropped(), processed: vnf.processed, stamped: vnf.stamped, items: vnf.store.keys('').length } };
        default:
          return { n, error: `unknown command '${String((c as { op?: unknown }).op)}'` };
      }
    } catch (e) {
      return { n, error: e instanceof Error ? e.message : String(e) };
    }
  };
  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => void answer(line).then((a) => process.stdout.write(`${JSON.stringify(a, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`)));
  commands.on('close', () => quit(0));

  readNext();
  const ready: VnfProcessReady = { ready: true, name: spec.name, address: vnf.store.address, tun: tun.name, pid: process.pid };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`userspace VNF: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
