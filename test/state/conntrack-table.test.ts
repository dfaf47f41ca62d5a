// A namespace's conntrack table as a VNF state store (what a node exports
// and imports for a `linux` instance): filtered exports by rule match, the
// NAT mapping carried in the value, imports that replace a stale entry,
// deletes; values from the network checked field by field before anything
// is installed. Real kernel tables in namespaces of the test's own.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { ConntrackTable, ConntrackValueError, decodeConntrackEntry, encodeConntrackEntry } from '../../src/state/conntrack-table.js';
import { parseConntrackLine, type ConntrackEntry } from '../../src/state/conntrack-manager.js';
import type { FlowKey } from '../../src/dataplane/types.js';
import { testNetns } from '../helpers/netns.js';

const TCP = 6;
const UDP = 17;
const tcpFlow: FlowKey = { src: '10.0.0.1', dst: '10.0.0.2', sport: 40123, dport: 5001, proto: TCP };
const udpFlow: FlowKey = { src: '10.0.0.1', dst: '10.0.0.2', sport: 20000, dport: 9000, proto: UDP };
const otherFlow: FlowKey = { src: '10.9.0.1', dst: '10.9.0.2', sport: 1111, dport: 2222, proto: UDP };

/** a NATed (SNAT to 10.0.0.100) established TCP entry */
const natTcp: ConntrackEntry = {
  proto: 'tcp',
  orig: tcpFlow,
  reply: { src: '10.0.0.2', dst: '10.0.0.100', sport: 5001, dport: 40123, proto: TCP },
  timeout: 3000,
  tcpState: 'ESTABLISHED',
  assured: true,
  seenReply: true,
  mark: 7,
};
const plainUdp: ConntrackEntry = { proto: 'udp', orig: udpFlow, reply: { src: '10.0.0.2', dst: '10.0.0.1', sport: 9000, dport: 20000, proto: UDP }, timeout: 100, assured: false, seenReply: true, mark: 0 };
const unrelated: ConntrackEntry = { ...plainUdp, orig: otherFlow, reply: { src: '10.9.0.2', dst: '10.9.0.1', sport: 2222, dport: 1111, proto: UDP } };

/** every entry of a namespace's table, from the tool itself */
function listing(netns: string): ConntrackEntry[] {
  const out = execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-L', '-o', 'extended'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out
    .split('\n')
    .map((l) => (l.trim() === '' ? undefined : parseConntrackLine(l)))
    .filter((e): e is ConntrackEntry => e !== undefined)
    .sort((a, b) => a.orig.sport - b.orig.sport);
}

/** what must survive a move: everything but the timeout, which runs down */
const moved = (e: ConntrackEntry): Omit<ConntrackEntry, 'timeout'> => {
  const { timeout: _t, ...rest } = e;
  return rest;
};

t.test('export by rule match, import elsewhere with the NAT mapping, delete at the source', async (t) => {
  const a = new ConntrackTable({ netns: testNetns(t, 'cta') });
  const bNs = testNetns(t, 'ctb');
  const b = new ConntrackTable({ netns: bNs });
  await a.importState([natTcp, plainUdp, unrelated].map((e) => ({ flow: e.orig, value: encodeConntrackEntry(e) })));

  const exact = await a.exportState([{ kind: 'exact', flow: tcpFlow }]);
  t.same(exact.map((x) => x.flow), [tcpFlow], 'an exact rule: its own entry only');
  const byReply = await a.exportState([{ kind: 'exact', flow: natTcp.reply }]);
  t.same(byReply.map((x) => x.flow), [tcpFlow], 'the reverse rule (the translated reply tuple) finds the same entry');
  const wild = await a.exportState([{ kind: 'wildcard', src: '10.0.0.1/32', priority: 1 }]);
  t.same(wild.map((x) => x.flow.sport).sort(), [20000, 40123], 'a wildcard on source 10.0.0.1: both of its flows, not the unrelated one');
  // (a prefix wider than /32 the kernel cannot filter: that dump lists every entry of the protocol)
  t.notOk(a.commands.some((c) => c.some((x) => x.includes('(unfiltered)'))), `no unfiltered dump of the whole table: ${JSON.stringify(a.commands.filter((c) => c[1] === 'ctnetlink-lookup'))}`);

  await b.importState(wild);
  t.same(listing(bNs).map(moved), [natTcp, plainUdp].map(moved).sort((x, y) => x.orig.sport - y.orig.sport), 'the new table has both entries: tuples, NAT mapping, TCP state, status, mark');
  await b.importState(wild);
  t.equal(listing(bNs).length, 2, 'importing again replaces, nothing doubles');

  await a.deleteState(wild.map((x) => x.flow));
  t.same(listing(a.netns!).map((e) => e.orig), [otherFlow], 'the source keeps only the flow that did not move');
});

t.test('values from the network are checked before anything is installed; the error names the entry and field', async (t) => {
  const ns = testNetns(t, 'ctv');
  const table = new ConntrackTable({ netns: ns });
  const good = { flow: udpFlow, value: encodeConntrackEntry(plainUdp) };
  const bad: [string, unknown, RegExp][] = [
    ['a port out of range', { ...natTcp, orig: { ...tcpFlow, sport: 70000 } }, /entries\[1\]\.orig\.sport: 70000 is not a port/],
    ['a host name for an address', { ...natTcp, reply: { ...natTcp.reply, dst: 'evil.example' } }, /entries\[1\]\.reply\.dst: "evil\.example" is not an IPv4 address/],
    ['an unknown TCP state', { ...natTcp, tcpState: 'ESTABLISHED --help' }, /entries\[1\]\.tcpState/],
    ['a protocol that does not move', { ...natTcp, proto: 'icmp' }, /entries\[1\]\.proto: "icmp"/],
    ['a negative timeout', { ...natTcp, timeout: -1 }, /entries\[1\]\.timeout: -1/],
  ];
  for (const [what, value, why] of bad) {
    await t.rejects(table.importState([good, { flow: tcpFlow, value: Buffer.from(JSON.stringify(value)) }]), why, `${what}: refused`);
  }
  await t.rejects(table.importState([good, { flow: otherFlow, value: encodeConntrackEntry(natTcp) }]), /entries\[1\]\.orig: .* is not the entry's flow/, "a value whose tuple is not the entry's flow: refused");
  await t.rejects(table.importState([{ flow: tcpFlow, value: Buffer.from('{not json') }]), ConntrackValueError, 'not JSON: refused');
  t.same(listing(ns), [], 'nothing was installed, not even the good entry before the bad one');
  t.same(decodeConntrackEntry(encodeConntrackEntry(natTcp), tcpFlow), natTcp, 'a good value round-trips');
});
