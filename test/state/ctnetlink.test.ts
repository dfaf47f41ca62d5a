// ctnetlink look-ups, creates and exact deletes (src/state/ctnetlink.ts):
// the request encoding, bad input, and the real kernel in namespaces of
// this test, checked against the `conntrack` tool's own view (inserted
// with one `conntrack -R` batch, listed with `conntrack -L`): entries found
// by hash gets and kernel-filtered dumps, created as they were, deleted by
// original tuple (absent ones counted as missing, the rest untouched).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { uniqueName } from '../helpers/env.js';
import { createEntries, createRequest, deleteRequest, describeLookup, lookupEntries, nativeNetlinkTransport, CtNetlinkError, type CtLookup } from '../../src/state/ctnetlink.js';
import { ConntrackStateManager, type ConntrackEntry } from '../../src/state/conntrack-manager.js';
import { toolInsert, toolList } from '../helpers/conntrack.js';

/** netlink attributes of a payload: type (nested flag cleared) → payload */
function attrs(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 0; at + 4 <= b.length; ) {
    const len = b.readUInt16LE(at);
    out.set(b.readUInt16LE(at + 2) & 0x3fff, b.subarray(at + 4, at + len));
    at += (len + 3) & ~3;
  }
  return out;
}

t.test('a delete request is one framed IPCTNL_MSG_CT_DELETE with the original tuple in network byte order', async (t) => {
  const m = deleteRequest({ orig: { src: '10.0.0.1', dst: '10.0.0.2', sport: 41000, dport: 5002, proto: 6 }, zone: 3 }, 7);
  t.equal(m.readUInt32LE(0), m.length, 'nlmsg_len is the whole message');
  t.equal(m.readUInt16LE(4), (1 << 8) | 2, 'type: ctnetlink subsystem, CT_DELETE');
  t.equal(m.readUInt16LE(6), 0x1 | 0x4, 'flags: request, acknowledge');
  t.equal(m.readUInt32LE(8), 7, 'the sequence number given');
  t.equal(m[16], 2, 'nfgenmsg family AF_INET');
  const top = attrs(m.subarray(20));
  const tuple = attrs(top.get(1)!);
  const ip = attrs(tuple.get(1)!);
  const proto = attrs(tuple.get(2)!);
  t.same([...ip.get(1)!], [10, 0, 0, 1], 'CTA_IP_V4_SRC');
  t.same([...ip.get(2)!], [10, 0, 0, 2], 'CTA_IP_V4_DST');
  t.equal(proto.get(1)![0], 6, 'CTA_PROTO_NUM');
  t.equal(proto.get(2)!.readUInt16BE(0), 41000, 'CTA_PROTO_SRC_PORT, big-endian');
  t.equal(proto.get(3)!.readUInt16BE(0), 5002, 'CTA_PROTO_DST_PORT, big-endian');
  t.equal(top.get(18)!.readUInt16BE(0), 3, 'CTA_ZONE, big-endian');
});

t.test('bad tuples are refused naming the field and the limit', async (t) => {
  const f = { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, proto: 6 };
  t.throws(() => deleteRequest({ orig: { ...f, src: 'fd00::1' } }, 1), new CtNetlinkError("src: 'fd00::1' is not an IPv4 address (ctnetlink deletes handle IPv4 only)"));
  t.throws(() => deleteRequest({ orig: { ...f, dport: 70000 } }, 1), new CtNetlinkError('dport: 70000 is not a port (0–65535)'));
  t.throws(() => deleteRequest({ orig: { ...f, proto: 300 } }, 1), new CtNetlinkError('proto: 300 is not an IP protocol number (0–255)'));
});

t.test('real kernel: 1000 entries deleted by exact tuple; absent ones missing, others untouched', async (t) => {
  const ns = uniqueName('ctnl');
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const manager = new ConntrackStateManager({ netnsOf: () => ns });
  t.teardown(() => manager.close());
  const entry = (sport: number): ConntrackEntry => ({
    proto: 'tcp',
    orig: { src: '10.9.0.1', dst: '10.9.0.2', sport, dport: 80, proto: 6 },
    reply: { src: '10.9.0.2', dst: '10.9.0.100', sport: 80, dport: sport, proto: 6 },
    timeout: 300,
    tcpState: 'ESTABLISHED',
    assured: true,
    seenReply: true,
    mark: 0,
  });
  const moving = Array.from({ length: 1000 }, (_, i) => entry(20000 + i));
  const staying = entry(30000);
  toolInsert(ns, [...moving, staying]);
  const list = (): ConntrackEntry[] => toolList(ns);
  const before = list();
  t.equal(before.length, 1001, 'the batch inserted every entry');
  t.same(before.find((e) => e.orig.sport === 20500)?.reply, entry(20500).reply, 'with its NAT mapping (reply tuple)');
  const r = await manager.deleteAt('x', [...moving, entry(40000)]);
  t.same(r, { deleted: 1000, missing: 1 }, '1000 deleted, the absent one counted as missing');
  t.same(list().map((e) => e.orig.sport), [30000], 'only the entry not asked for is left');
  t.same(await manager.deleteAt('x', moving), { deleted: 0, missing: 1000 }, 'deleting again finds none');
});

t.test('real kernel: look-ups find exactly what they name — hash gets by either tuple, dumps filtered by the kernel', async (t) => {
  const ns = uniqueName('ctnl');
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const manager = new ConntrackStateManager({ netnsOf: () => ns });
  t.teardown(() => manager.close());
  const natted = (sport: number, tcpState = 'ESTABLISHED'): ConntrackEntry => ({
    proto: 'tcp',
    orig: { src: '10.9.0.1', dst: '10.9.0.2', sport, dport: 80, proto: 6 },
    reply: { src: '10.9.0.2', dst: '10.9.0.100', sport: 80, dport: sport, proto: 6 },
    timeout: 300,
    tcpState,
    assured: true,
    seenReply: true,
    mark: 5,
  });
  const udp: ConntrackEntry = {
    proto: 'udp',
    orig: { src: '10.9.0.7', dst: '10.9.0.8', sport: 1, dport: 2, proto: 17 },
    reply: { src: '10.9.0.8', dst: '10.9.0.7', sport: 2, dport: 1, proto: 17 },
    timeout: 30,
    assured: false,
    seenReply: false,
    mark: 0,
  };
  const tcp = Array.from({ length: 1000 }, (_, i) => natted(20000 + i));
  toolInsert(ns, [...tcp, natted(19999, 'TIME_WAIT'), udp]);
  const transport = await nativeNetlinkTransport();
  const lookups: CtLookup[] = [
    { kind: 'dump', dir: 'orig', src: '10.9.0.1', dst: '10.9.0.2', proto: 6 },
    { kind: 'dump', dir: 'reply', dst: '10.9.0.100' },
    { kind: 'dump', dir: 'orig', dst: '10.9.0.100' },
    { kind: 'dump', dir: 'orig', proto: 17 },
    { kind: 'dump', dir: 'orig', proto: 6, sport: 20005, dport: 80 },
    { kind: 'get', dir: 'orig', tuple: natted(20005).orig },
    { kind: 'get', dir: 'reply', tuple: natted(20006).reply },
    { kind: 'get', dir: 'orig', tuple: natted(40000).orig },
  ];
  const found = await lookupEntries(transport, ns, lookups);
  t.same(found.map((f) => f.length), [1001, 1001, 0, 1, 1, 1, 1, 0], lookups.map(describeLookup).join('; '));
  const withoutTimeout = (e: ConntrackEntry | undefined): Omit<ConntrackEntry, 'timeout'> | undefined => {
    if (e === undefined) return undefined;
    const { timeout: _t, ...rest } = e;
    return rest;
  };
  t.same(withoutTimeout(found[5]![0]), withoutTimeout(natted(20005)), 'an entry as inserted: tuples, NAT mapping, state, status, mark');
  t.ok(found[5]![0]!.timeout > 290 && found[5]![0]!.timeout <= 300, `its timeout counts down from 300 (${found[5]![0]!.timeout})`);
  t.same(withoutTimeout(found[6]![0]), withoutTimeout(natted(20006)), 'found by its reply tuple (the NATed side)');
  t.equal(found[0]!.find((e) => e.orig.sport === 19999)?.tcpState, 'TIME_WAIT');
  t.same(withoutTimeout(found[3]![0]), withoutTimeout(udp), 'UDP, unreplied, no state');
});

t.test('real kernel: 1000 entries created as they were — NAT mapping, state, status, mark, zone — and one that exists is refused', async (t) => {
  const ns = uniqueName('ctnl');
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const transport = await nativeNetlinkTransport();
  // source NAT to another port, so the mapping cannot be the kernel's default
  const natted = (sport: number, tcpState = 'ESTABLISHED'): ConntrackEntry => ({
    proto: 'tcp',
    orig: { src: '10.9.0.1', dst: '10.9.0.2', sport, dport: 80, proto: 6 },
    reply: { src: '10.9.0.2', dst: '10.9.0.100', sport: 80, dport: sport + 1, proto: 6 },
    timeout: 300,
    tcpState,
    assured: true,
    seenReply: true,
    mark: 5,
  });
  const udp: ConntrackEntry = {
    proto: 'udp',
    orig: { src: '10.9.0.7', dst: '10.9.0.8', sport: 1, dport: 2, proto: 17 },
    reply: { src: '10.9.0.8', dst: '10.9.0.7', sport: 2, dport: 1, proto: 17 },
    timeout: 30,
    assured: false,
    seenReply: false,
    mark: 0,
    zone: 3,
  };
  const all = [...Array.from({ length: 1000 }, (_, i) => natted(20000 + 2 * i)), natted(19990, 'TIME_WAIT'), udp];
  const r = await createEntries(transport, ns, all);
  t.same({ created: r.created, existing: r.existing.length, failed: r.failed }, { created: 1002, existing: 0, failed: [] }, 'every entry created');
  const listed = new Map(toolList(ns).map((e) => [`${e.orig.src}:${e.orig.sport}`, e]));
  t.equal(listed.size, 1002, 'the tool lists them all');
  const bad = all.filter((e) => {
    const got = listed.get(`${e.orig.src}:${e.orig.sport}`);
    return got === undefined || JSON.stringify({ ...got, timeout: 0 }) !== JSON.stringify({ ...e, timeout: 0 }) || got.timeout > e.timeout || got.timeout < e.timeout - 10;
  });
  t.same(bad, [], 'each as the tool sees it: the same tuples (NAT port included), state, status, mark, zone; timeout counting down');
  const again = await createEntries(transport, ns, all.slice(0, 2));
  t.same([again.created, again.existing.length], [0, 2], 'an entry that exists is reported, not replaced');
  t.throws(() => createRequest({ ...natted(1), tcpState: 'BOGUS' }, 1), new CtNetlinkError("tcpState: 'BOGUS' is not one of NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2"));
});
