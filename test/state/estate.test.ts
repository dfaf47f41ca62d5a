// E-State: local and global views, reduce functions, membership, handover
// support, and peers that stop answering — over Unix sockets, and over TCP
// with mutual TLS.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCa, createNodeCert, loadTls, nodeTlsFiles } from '../../src/node/transport/certs.js';
import { EStateNode, PeerUnavailableError, type EStateNodeOptions } from '../../src/state/estate/node.js';
import { spawnPeer, type PeerProcess, type PeerSpec } from '../../src/state/estate/peer-process.js';
import type { StateItem } from '../../src/state/estate/proto.js';
import { latestItem } from '../../src/state/estate/reduce.js';
import { HybridClock, wallClockUs } from '../../src/state/estate/clock.js';
import { MAX_FRAME_BYTES, parsePeerAddress, sweepStaleSockets } from '../../src/state/estate/transport.js';

async function node(t: Test, id: string, o: Omit<EStateNodeOptions, 'id'> = {}): Promise<EStateNode> {
  const n = await EStateNode.start({ id, ...o });
  t.teardown(() => n.close());
  return n;
}

async function peer(t: Test, spec: PeerSpec): Promise<PeerProcess> {
  const p = await spawnPeer(spec);
  t.teardown(() => p.stop());
  return p;
}

/** a, b, c joined into one group */
async function group(t: Test, o: Omit<EStateNodeOptions, 'id'> = {}): Promise<[EStateNode, EStateNode, EStateNode]> {
  const a = await node(t, 'a', o);
  const b = await node(t, 'b', o);
  const c = await node(t, 'c', o);
  await b.join(a.address);
  await c.join(b.address);
  return [a, b, c];
}

// certificates for the TCP tests: one CA for the group, and a rogue one
const certDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-estate-tls-'));
const rogueDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-estate-rogue-'));
t.teardown(() => {
  rmSync(certDir, { recursive: true, force: true });
  rmSync(rogueDir, { recursive: true, force: true });
});
await createCa(certDir);
await createCa(rogueDir, { name: 'rogue-ca' });
for (const n of ['a', 'b', 'c']) await createNodeCert(certDir, n, { ips: ['127.0.0.1'] });
await createNodeCert(rogueDir, 'r', { ips: ['127.0.0.1'] });
const mtls = {
  node: (name: string) => loadTls(nodeTlsFiles(certDir, name), 'server'),
  rogue: () => loadTls(nodeTlsFiles(rogueDir, 'r'), 'server'),
};

const ids = (n: EStateNode): string[] =>
  n
    .members()
    .map((m) => m.id)
    .sort();

t.test('three nodes on distinct Unix sockets (only their owner may connect) form one group by joining through any member', async (t) => {
  const [a, b, c] = await group(t);
  const paths = [a, b, c].map((n) => n.address.replace(/^unix:/, ''));
  t.ok([a, b, c].every((n) => n.address.startsWith('unix:/')), `Unix sockets: ${paths.join(', ')}`);
  t.equal(new Set(paths).size, 3, 'one socket each');
  for (const p of paths) {
    t.equal(statSync(p).mode & 0o777, 0o600, `${p} is 0600`);
    t.equal(statSync(path.dirname(p)).mode & 0o777, 0o700, 'in a folder only its owner enters');
  }
  t.same(ids(a), ['b', 'c'], 'a learned about c although c joined through b');
  t.same(ids(b), ['a', 'c']);
  t.same(ids(c), ['a', 'b']);
});

t.test('local view: get, set, del on the instance’s own items, timestamped', async (t) => {
  const a = await node(t, 'a');
  t.equal(a.get('x'), undefined);
  const i1 = a.set('x', 1n);
  const i2 = a.set('x', 2n);
  t.equal(a.get('x'), 2n);
  t.equal(i2.owner, 'a');
  t.ok(i2.ts > i1.ts, 'timestamps grow with every write');
  t.ok(Math.abs(i2.ts / 1000 - Date.now()) < 60_000, 'timestamps are µs of wall-clock time');
  a.set('flow/1', 'one');
  a.set('flow/2', Buffer.from([1, 2, 3]));
  t.same(a.keys('flow/').sort(), ['flow/1', 'flow/2']);
  t.equal(a.del('x'), true);
  t.equal(a.del('x'), false);
  t.equal(a.get('x'), undefined);
  t.equal(a.size, 2);
});

t.test('local view: setMany writes a batch at one instant, in order, later than every write before it', async (t) => {
  const a = await node(t, 'a');
  const b = await node(t, 'b');
  await b.join(a.address);
  const before = b.set('k', 1n);
  t.equal(a.setMany([['k', 2n], ['m', 'two'], ['k', 3n]]), 3, 'three writes');
  const k = a.getItem('k')!;
  const m = a.getItem('m')!;
  t.equal(k.value, 3n, 'in order: the last write of a key wins');
  t.equal(m.owner, 'a');
  t.equal(k.ts, m.ts + 1, 'consecutive timestamps');
  t.ok(m.ts > before.ts, 'later than the write made before the batch (on another node of the process)');
  const after = b.set('k', 4n);
  t.ok(after.ts > k.ts, 'and earlier than the write made after it');
  t.equal((await a.getGlobal('k', 'latest')).value, 4n);
  t.equal(a.setMany([]), 0, 'an empty batch writes nothing');
});

t.test('a closed node removes its socket, a killed one’s is swept; a frame over the size limit closes that connection only', async (t) => {
  const a = await node(t, 'a');
  a.set('k', 1n);
  const sock = a.address.slice('unix:'.length);
  const refused = await new Promise<string>((resolve) => {
    const s = net.createConnection(sock);
    s.on('connect', () => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 1])));
    s.on('data', () => resolve('answered'));
    s.on('close', () => resolve('closed'));
    s.on('error', (e) => resolve(`error ${e.message}`));
  });
  t.equal(refused, 'closed', `a 4 GiB frame (limit ${MAX_FRAME_BYTES} bytes): the connection is closed`);
  const b = await node(t, 'b');
  b.addPeer({ id: 'a', address: a.address });
  t.equal((await b.getGlobal('k', 'sum', { self: false })).value, 1n, 'the node still serves others');
  t.ok(existsSync(sock));
  await a.close();
  t.notOk(existsSync(sock), 'socket file removed on close');
  // a peer killed with SIGKILL cannot remove its socket: the next sweep does, by its dead pid
  const killed = await spawnPeer({ id: 'killed' });
  const left = killed.address.slice('unix:'.length);
  killed.signal('SIGKILL');
  await killed.stop();
  t.ok(existsSync(left), 'a killed peer leaves its socket');
  t.ok(sweepStaleSockets(path.dirname(left)).includes(path.basename(left)), 'swept');
  t.notOk(existsSync(left));
  t.ok(existsSync(b.address.slice('unix:'.length)), 'a live node keeps its socket');
  t.throws(() => parsePeerAddress('unix:relative.sock'), { name: 'PeerAddressError', message: /must be absolute/ });
  t.throws(() => parsePeerAddress('localhost:70000'), { name: 'PeerAddressError', message: /port 1-65535/ });
  t.same(parsePeerAddress('[::1]:5'), { kind: 'tcp', host: '::1', port: 5 });
});

t.test('every value type crosses the wire unchanged', async (t) => {
  const [a, b] = await group(t);
  const values = [0, -1.5, 1e300, 0n, -42n, 2n ** 63n - 1n, -(2n ** 63n), '', 'häßlich ✓', Buffer.alloc(0), Buffer.from([0, 255, 1, 254])];
  values.forEach((v, i) => b.set(`v${i}`, v));
  const got = new Map((await a.fetch('b', { prefix: 'v' })).map((i) => [i.key, i.value]));
  values.forEach((v, i) => t.same(got.get(`v${i}`), v, `${typeof v} ${Buffer.isBuffer(v) ? v.toString('hex') : String(v)}`));
  t.ok(Buffer.isBuffer(got.get('v10')), 'bytes come back as a Buffer');
});

t.test('global view: every reduce function', async (t) => {
  const [a, b, c] = await group(t);

  await t.test('sum of bigints is exact, beyond 2^53', async (t) => {
    a.set('n', 2n ** 60n);
    b.set('n', 3n);
    c.set('n', 4n);
    const r = await a.getGlobal('n', 'sum');
    t.equal(r.value, 2n ** 60n + 7n);
    t.same(r.answered.sort(), ['a', 'b', 'c']);
    t.same(r.missing, []);
    t.equal(r.partial, false);
    t.equal(r.items.length, 3);
  });

  await t.test('sum and avg of numbers, and of numbers mixed with bigints', async (t) => {
    a.set('f', 1.5);
    b.set('f', 2.5);
    c.set('f', 5);
    t.equal((await b.getGlobal('f', 'sum')).value, 9);
    t.equal((await b.getGlobal('f', 'avg')).value, 3);
    c.set('f', 5n);
    t.equal((await b.getGlobal('f', 'sum')).value, 9, 'mixed: a number');
    a.set('i', 1n);
    b.set('i', 2n);
    c.set('i', 4n);
    t.equal((await c.getGlobal('i', 'avg')).value, 7 / 3);
  });

  await t.test('latest: the value written last anywhere', async (t) => {
    b.set('cfg', 'old');
    c.set('cfg', 'middle');
    a.set('cfg', 'new');
    for (const n of [a, b, c]) t.equal((await n.getGlobal('cfg', 'latest')).value, 'new', `seen from ${n.id}`);
    b.set('cfg', 'newest');
    t.equal((await a.getGlobal('cfg', 'latest')).value, 'newest');
  });

  await t.test('a key only some instances hold; a key nobody holds', async (t) => {
    b.set('only-b', 7n);
    const r = await a.getGlobal('only-b', 'sum');
    t.equal(r.value, 7n);
    t.equal(r.items.length, 1);
    t.same(r.answered.sort(), ['a', 'b', 'c'], 'all answered, one had it');
    t.equal((await a.getGlobal('nobody', 'sum')).value, 0n);
    t.equal((await a.getGlobal('nobody', 'avg')).value, undefined);
    t.equal((await a.getGlobal('nobody', 'latest')).value, undefined);
  });

  await t.test('custom reduce functions get every item with owner and timestamp', async (t) => {
    a.set('load', 0.2);
    b.set('load', 0.9);
    c.set('load', 0.4);
    const busiest = (items: readonly StateItem[]): string | undefined => [...items].sort((x, y) => Number(y.value) - Number(x.value))[0]?.owner;
    t.equal((await c.getGlobal('load', busiest)).value, 'b');
    const owners = await a.getGlobal('load', (items) => items.map((i) => i.owner).sort());
    t.same(owners.value, ['a', 'b', 'c']);
    const max = await a.getGlobal('load', (items) => Math.max(...items.map((i) => Number(i.value))));
    t.equal(max.value, 0.9);
  });

  await t.test('the instance’s own item can be left out', async (t) => {
    a.set('s', 100n);
    b.set('s', 1n);
    c.set('s', 2n);
    const r = await a.getGlobal('s', 'sum', { self: false });
    t.equal(r.value, 3n);
    t.same(r.answered.sort(), ['b', 'c']);
  });

  await t.test('sum and avg of non-numeric items reject; unknown reduce names reject', async (t) => {
    a.set('str', 'x');
    b.set('str', 1n);
    await t.rejects(a.getGlobal('str', 'sum'), { name: 'ReduceError', message: /sum: the item of 'str' at a is a string, not a number/ });
    c.set('raw', Buffer.from('x'));
    await t.rejects(a.getGlobal('raw', 'avg'), { name: 'ReduceError', message: /is a byte string/ });
    await t.rejects(a.getGlobal('s', 'median' as 'sum'), { message: /unknown reduce function 'median'/ });
  });
});

t.test('latest: writes one after the other on instances of one process, however close together', async (t) => {
  // The flaky 'latest' above: b, c and a wrote within a µs or two, each node
  // with a clock of its own, so c's and a's items could get the same ts —
  // and the tie went to the higher owner id, c. Here many rounds of three
  // back-to-back writes, in every order of the writers.
  const [a, b, c] = await group(t);
  const orders = [
    [a, b, c],
    [a, c, b],
    [b, a, c],
    [b, c, a],
    [c, a, b],
    [c, b, a],
  ];
  let wrong = 0;
  let example = '';
  for (let r = 0; r < 1200; r++) {
    const order = orders[r % orders.length]!;
    const written = order.map((n, i) => n.set('seq', `${r}/${i}`));
    const last = written[written.length - 1]!;
    if (latestItem(written) !== last) {
      wrong++;
      example ||= written.map((i) => `${i.owner}@${i.ts}`).join(' then ');
    }
  }
  t.equal(wrong, 0, `the last write is the latest in every round${example ? ` (e.g. ${example})` : ''}`);
  // and through the global view, from every reader
  const seen: string[] = [];
  const want: string[] = [];
  for (let r = 0; r < 12; r++) {
    const order = orders[r % orders.length]!;
    order.forEach((n, i) => n.set('seq', `${order.map((o) => o.id).join('')}/${i}`));
    for (const n of [a, b, c]) {
      seen.push(`${n.id} sees ${String((await n.getGlobal('seq', 'latest')).value)}`);
      want.push(`${n.id} sees ${order.map((o) => o.id).join('')}/${order.length - 1}`);
    }
  }
  t.same(seen, want, 'getGlobal latest: the value written last, seen from every instance');
});

t.test('the hybrid logical clock: strictly increasing, past every timestamp it observes', async (t) => {
  let wall = 1_000_000;
  const clock = new HybridClock(() => wall);
  const ts = [clock.tick(), clock.tick(), clock.tick()];
  t.same(ts, [1_000_000, 1_000_001, 1_000_002], 'a wall clock that does not move: the logical part counts');
  wall = 2_000_000;
  t.equal(clock.tick(), 2_000_000, 'the wall clock moved on: the clock follows it');
  clock.observe(5_000_000);
  t.equal(clock.tick(), 5_000_001, 'a timestamp from a peer ahead: later writes are later than it');
  clock.observe(3_000_000);
  clock.observe(undefined);
  clock.observe(Number.NaN);
  clock.observe(Infinity);
  clock.observe(2 ** 60);
  t.equal(clock.now(), 5_000_001, 'earlier, absent and impossible timestamps do not move it; now() gives nothing out');
  t.equal(clock.tick(), 5_000_002);
  wall = 9_000_000;
  t.equal(clock.tick(), 9_000_000);
  t.equal(clock.tickMany(3), 9_000_001, 'a batch of 3: the first of three timestamps');
  t.equal(clock.tick(), 9_000_004, 'the next write is past all three');
  wall = 10_000_000;
  t.equal(clock.tickMany(2), 10_000_000, 'the wall clock, read once for the batch');
  t.equal(clock.now(), 10_000_001);

  // the real wall clock: µs, never outside the millisecond Date.now() shows, in this process or another
  for (let i = 0; i < 10_000; i++) {
    const before = Date.now();
    const us = wallClockUs();
    const after = Date.now();
    if (us < before * 1000 || us > after * 1000 + 999) {
      t.fail(`wallClockUs() ${us} outside [${before * 1000}, ${after * 1000 + 999}]`);
      break;
    }
  }
  const p = await peer(t, { id: 'p' });
  for (let i = 0; i < 20; i++) {
    const before = Date.now();
    const item = await p.set('k', i);
    const after = Date.now();
    if (item.ts < before * 1000 || item.ts > after * 1000 + 999) t.fail(`a peer process's timestamp ${item.ts} outside [${before * 1000}, ${after * 1000 + 999}]`);
  }
  t.pass('a peer process timestamps by the same wall clock (to within its millisecond)');
});

t.test('latest across processes with skewed clocks: a write made after hearing from a peer is later than the peer’s writes', async (t) => {
  // peer processes whose wall clocks are 250 ms ahead of this process's, 250 ms behind, 500 ms behind
  const a = await node(t, 'a');
  const ahead = await peer(t, { id: 'ahead', seed: a.address, clockSkewUs: 250_000 });
  const behind = await peer(t, { id: 'behind', seed: a.address, clockSkewUs: -250_000 });
  const late = await peer(t, { id: 'late', seed: a.address, clockSkewUs: -500_000 });
  t.same(ids(a), ['ahead', 'behind', 'late']);
  const everyone = async (key: string): Promise<unknown[]> => [
    (await a.getGlobal(key, 'latest')).value,
    ...(await Promise.all([ahead, behind, late].map(async (p) => (await p.getGlobal(key, 'latest')).value))),
  ];

  // through an item read in the global view
  const old = await ahead.set('cfg', 'old');
  t.ok(old.ts > wallClockUs() + 200_000, 'the peer ahead timestamps 250 ms in the future');
  t.equal((await a.getGlobal('cfg', 'latest')).value, 'old');
  const mine = a.set('cfg', 'new');
  t.ok(mine.ts > old.ts, 'a read the old value: its write is later');
  t.same(await everyone('cfg'), ['new', 'new', 'new', 'new'], 'every reader sees the value written last');
  t.equal((await behind.getGlobal('cfg', 'latest')).value, 'new');
  const newest = await behind.set('cfg', 'newest');
  t.ok(newest.ts > mine.ts, 'the peer behind read the new value: its write is later still');
  t.same(await everyone('cfg'), ['newest', 'newest', 'newest', 'newest']);

  // through the clock every message carries (here: replies about another key)
  await ahead.set('cfg2', 'x');
  await behind.getGlobal('unrelated', 'sum');
  await behind.set('cfg2', 'y');
  t.same(await everyone('cfg2'), ['y', 'y', 'y', 'y'], 'a write after any message from a peer is later than the peer’s earlier writes');

  // … requests carry it too: 'late' (which only answers, asks nothing) was asked by 'behind' after behind's write
  await behind.set('cfg3', 'from behind');
  await behind.getGlobal('unrelated', 'sum');
  await late.set('cfg3', 'from late');
  t.same(await everyone('cfg3'), ['from late', 'from late', 'from late', 'from late']);
});

t.test('peers join and leave; the global view follows', async (t) => {
  const [a, b, c] = await group(t);
  for (const n of [a, b, c]) n.set('k', 1n);
  const d = await node(t, 'd');
  d.set('k', 10n);
  const joined = await d.join(c.address);
  t.same(joined.members.map((m) => m.id).sort(), ['a', 'b', 'c']);
  t.same(joined.unreached, []);
  t.same(ids(a), ['b', 'c', 'd'], 'a knows d');
  const before = await a.getGlobal('k', 'sum');
  t.equal(before.value, 13n, 'd is counted');
  t.same(before.answered.sort(), ['a', 'b', 'c', 'd']);

  const left = await d.leave();
  t.same(left.told.sort(), ['a', 'b', 'c']);
  t.same(d.members(), [], 'd forgot the group');
  for (const n of [a, b, c]) t.notOk(ids(n).includes('d'), `${n.id} forgot d`);
  const after = await a.getGlobal('k', 'sum');
  t.equal(after.value, 3n);
  t.equal(after.partial, false, 'a peer that left is not missing: it is no member');

  // a member that leaves by closing without telling anyone is missing until removed
  await c.close();
  const gone = await a.getGlobal('k', 'sum', { timeoutMs: 300, retries: 1 });
  t.equal(gone.partial, true);
  t.same(gone.missing, ['c']);
  t.equal(gone.value, 2n, 'the answer covers a and b');
  t.match(gone.errors['c'], /E-State peer c did not answer \(2 attempts\): Get (UNAVAILABLE|DEADLINE_EXCEEDED|CANCELLED)/);
  a.removePeer('c');
  t.equal((await a.getGlobal('k', 'sum')).partial, false);
});

t.test('joining through a member that does not answer rejects, bounded', async (t) => {
  const a = await node(t, 'a', { timeoutMs: 200, retries: 1 });
  const closed = await node(t, 'gone');
  const addr = closed.address;
  await closed.close();
  await t.rejects(a.join(addr), PeerUnavailableError);
});

/** The most a getGlobal may take with these options: every attempt's deadline plus the back-offs. */
function bound(timeoutMs: number, retries: number, backoffMs = 25): number {
  let b = 0;
  for (let i = 0; i <= retries; i++) b += timeoutMs + (i > 0 ? backoffMs * 2 ** (i - 1) : 0);
  return b;
}
// scheduling slack on a loaded 2-core machine: the check is "no hang", not speed
const SLACK_MS = 3000;

t.test('a peer process killed while it is answering: a partial result, flagged, in bounded time', async (t) => {
  const a = await node(t, 'a', { timeoutMs: 1500, retries: 2 });
  const ok = await peer(t, { id: 'ok', items: [['k', { int: '5' }]] });
  const slow = await peer(t, { id: 'slow', items: [['k', { int: '1000' }]], answerDelayMs: 700 });
  a.set('k', 1n);
  a.addPeer({ id: ok.id, address: ok.address });
  a.addPeer({ id: slow.id, address: slow.address });
  const warm = await a.getGlobal('k', 'sum');
  t.equal(warm.value, 1006n, 'all three answer while alive');

  const t0 = performance.now();
  const pending = a.getGlobal('k', 'sum');
  await new Promise((r) => setTimeout(r, 150));
  slow.signal('SIGKILL'); // mid-request: it has the request, its answer is 550 ms away
  const r = await pending;
  const ms = performance.now() - t0;
  t.equal(r.partial, true, 'flagged as partial');
  t.same(r.missing, ['slow']);
  t.same(r.answered.sort(), ['a', 'ok']);
  t.equal(r.value, 6n, 'the value covers the instances that answered');
  t.match(r.errors['slow'], /did not answer \(3 attempts\)/, 'retried, then gave up');
  t.ok(ms <= bound(1500, 2) + SLACK_MS, `returned after ${ms.toFixed(0)} ms (bound ${bound(1500, 2)} ms)`);
  t.ok(a.stats().retries >= 2, 'the failed peer was retried');
});

t.test('a frozen peer (SIGSTOP) misses its deadlines; thawed, it answers again', async (t) => {
  const a = await node(t, 'a', { timeoutMs: 300, retries: 1 });
  const p = await peer(t, { id: 'frozen', items: [['k', { int: '7' }]] });
  a.addPeer({ id: p.id, address: p.address });
  t.equal((await a.getGlobal('k', 'sum')).value, 7n);
  p.signal('SIGSTOP');
  const t0 = performance.now();
  const r = await a.getGlobal('k', 'sum');
  const ms = performance.now() - t0;
  t.equal(r.partial, true);
  t.same(r.missing, ['frozen']);
  t.match(r.errors['frozen'], /DEADLINE_EXCEEDED/);
  t.ok(ms <= bound(300, 1) + SLACK_MS, `returned after ${ms.toFixed(0)} ms (bound ${bound(300, 1)} ms)`);
  await t.rejects(a.fetch('frozen', { keys: ['k'] }), PeerUnavailableError, 'handover fetches reject instead of hanging');
  p.signal('SIGCONT');
  const back = await a.getGlobal('k', 'sum', { timeoutMs: 2000 });
  t.equal(back.partial, false, 'thawed, it answers');
  t.equal(back.value, 7n);
});

t.test('an in-process peer closed while a request is in flight', async (t) => {
  // b would answer after 2 s, well within a's 5 s deadline: only its closing can make it miss
  const a = await node(t, 'a', { timeoutMs: 5000, retries: 1 });
  const b = await node(t, 'b', { answerDelayMs: 2000 });
  b.set('k', 3n);
  a.addPeer({ id: 'b', address: b.address });
  const pending = a.getGlobal('k', 'sum');
  await new Promise((r) => setTimeout(r, 100));
  await b.close();
  const r = await pending;
  t.equal(r.partial, true, `missing: ${r.errors['b']}`);
  t.same(r.missing, ['b']);
  t.equal(r.value, 0n);
});

t.test('getGlobal honours an abort signal', async (t) => {
  const a = await node(t, 'a', { timeoutMs: 5000 });
  const b = await node(t, 'b', { answerDelayMs: 2000 });
  a.addPeer({ id: 'b', address: b.address });
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('enough')), 100);
  await t.rejects(a.getGlobal('k', 'sum', { signal: ac.signal }), { message: 'enough' });
});

t.test('handover support: fetch, drop and obtain move items between local views', async (t) => {
  const [a, b] = await group(t);
  a.set('flow/x/packets', 41n);
  a.set('flow/x/bytes', 4100n);
  a.set('flow/y/packets', 1n);
  const tsX = a.getItem('flow/x/packets')!.ts;

  const copy = await b.fetch('a', { prefix: 'flow/x/' });
  t.same(copy.map((i) => i.key).sort(), ['flow/x/bytes', 'flow/x/packets']);
  t.ok(a.has('flow/x/packets'), 'fetch copies');

  await t.rejects(b.obtain('a', { keys: ['flow/x/packets', 'flow/z/packets'] }), { name: 'StateError', message: /has no item of 1 requested key/ });
  t.notOk(b.has('flow/x/packets'), 'a failed obtain adopts nothing');
  t.ok(a.has('flow/x/packets'), '… and drops nothing');

  const moved = await b.obtain('a', { keys: ['flow/x/packets', 'flow/x/bytes'] });
  t.equal(moved.length, 2);
  t.equal(b.get('flow/x/packets'), 41n);
  t.equal(b.getItem('flow/x/packets')!.owner, 'b', 'adopted: now b’s own');
  t.equal(b.getItem('flow/x/packets')!.ts, tsX, 'with its timestamp');
  t.notOk(a.has('flow/x/packets'), 'dropped at the old instance');
  t.ok(a.has('flow/y/packets'), 'other flows stay');
  t.ok(b.set('flow/x/packets', 42n).ts > tsX, 'the new owner’s next write is later than the old owner’s last');
  t.equal((await a.getGlobal('flow/x/packets', 'sum')).value, 42n, 'the global view sees one counter, at b');

  t.equal(await b.drop('a', ['flow/y/packets', 'nope']), 1);
  await t.rejects(b.fetch('zz', { keys: ['k'] }), { name: 'StateError', message: /no peer 'zz' \(peers: a, c\)/ });
});

t.test('nodes need ids; bad options name the field and its limit; a taken socket or port is reported', async (t) => {
  await t.rejects(EStateNode.start({ id: '' }), { message: /needs an id/ });
  await t.rejects(EStateNode.start({ id: 'x', timeoutMs: 0 }), { name: 'StateError', message: /timeoutMs must be a number from 1 to 3600000 \(got 0\)/ });
  await t.rejects(EStateNode.start({ id: 'x', retries: -1 }), { name: 'StateError', message: /retries must be a number from 0 to 100/ });
  await t.rejects(EStateNode.start({ id: 'x', socketPath: `/tmp/${'s'.repeat(120)}.sock` }), { name: 'StateError', message: /socketPath .* is 130 bytes; a Unix socket path holds at most 107/ });
  const a = await node(t, 'a');
  await t.rejects(EStateNode.start({ id: 'b', socketPath: a.address.slice('unix:'.length) }), { name: 'StateError', message: /E-State node b cannot listen on \/.*EADDRINUSE/ });
  const tcp = await node(t, 'tcp', { host: '127.0.0.1', port: 0, tls: mtls.node('a') });
  const port = Number(tcp.address.split(':').pop());
  await t.rejects(EStateNode.start({ id: 'b', port, tls: mtls.node('b') }), { name: 'StateError', message: /cannot listen on 127\.0\.0\.1:\d+/ });
});

t.test('over TCP a node serves mutual TLS only: members with the group’s certificates work together, others are refused', async (t) => {
  await t.rejects(EStateNode.start({ id: 'plain', host: '127.0.0.1', port: 0 }), { name: 'StateError', message: /serving on TCP \(host\/port\) needs tls \(mutual TLS/ });
  const a = await node(t, 'a', { host: '127.0.0.1', port: 0, tls: mtls.node('a') });
  t.match(a.address, /^127\.0\.0\.1:\d+$/);
  a.set('k', 1n);
  const b = await node(t, 'b', { host: '127.0.0.1', port: 0, tls: mtls.node('b') });
  b.set('k', 2n);
  const c = await peer(t, { id: 'c', host: '127.0.0.1', port: 0, tls: nodeTlsFiles(certDir, 'c'), seed: a.address, items: [['k', { int: '4' }]] });
  await b.join(a.address);
  t.same(ids(a), ['b', 'c']);
  const r = await b.getGlobal('k', 'sum');
  t.equal(r.value, 7n, 'every member answered over mutual TLS');
  t.same(r.missing, []);
  t.same((await c.getGlobal('k', 'sum')).value, 7n, 'also when the peer process asks');

  const rogue = await node(t, 'rogue', { host: '127.0.0.1', port: 0, tls: mtls.rogue(), retries: 0, timeoutMs: 2000 });
  rogue.addPeer({ id: 'a', address: a.address });
  const rr = await rogue.getGlobal('k', 'sum', { self: false });
  t.same(rr.missing, ['a'], 'a node whose certificate another CA signed gets no answer');
  t.match(rr.errors['a'], /UNAVAILABLE/);

  // a TLS client that shows no certificate never gets an answer
  const served = a.stats().served['Get'] ?? 0;
  const outcome = await new Promise<string>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: Number(a.address.split(':').pop()), ca: mtls.node('b').ca, minVersion: 'TLSv1.3' });
    s.on('data', () => resolve('answered'));
    s.on('error', (e) => resolve(`refused: ${e.message}`));
    s.on('close', () => resolve('closed'));
    s.on('secureConnect', () => s.write(Buffer.from([0, 0, 0, 6, 0, 0, 0, 0, 1, 1])));
  });
  t.not(outcome, 'answered', `a client without a certificate: ${outcome}`);
  t.equal(a.stats().served['Get'] ?? 0, served, 'no request of it reached the handler');

  const plain = await node(t, 'plain', { retries: 0 });
  plain.addPeer({ id: 'a', address: a.address });
  const pr = await plain.getGlobal('k', 'sum', { self: false });
  t.match(pr.errors['a'], /FAILED_PRECONDITION: .* TCP needs mutual TLS: this node has no tls material/, 'a node without certificates cannot call TCP peers');
});
