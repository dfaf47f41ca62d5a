// The conntrack state manager's ctnetlink look-ups per rule match (hash
// look-ups and kernel-filtered dumps), and the tool's formats
// (src/state/conntrack-tool.ts, the oracle the real-kernel tests compare
// with): parsing `conntrack -o extended`, the -I arguments that recreate an
// entry (NAT mapping included), the filtered tool look-ups per rule match.
import t from 'tap';
import { lookupsFor } from '../../src/state/conntrack-manager.js';
import { parseConntrackLine, insertArgs, queriesFor } from '../../src/state/conntrack-tool.js';
import { describeLookup } from '../../src/state/ctnetlink.js';

t.test('parses a NATed TCP entry and recreates it with --src-nat ip:port', async (t) => {
  const e = parseConntrackLine('ipv4     2 tcp      6 431990 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40123 dport=5001 src=10.0.0.2 dst=10.0.0.100 sport=5001 dport=40123 [ASSURED] mark=7 use=1');
  t.same(e, {
    proto: 'tcp',
    orig: { src: '10.0.0.1', dst: '10.0.0.2', sport: 40123, dport: 5001, proto: 6 },
    reply: { src: '10.0.0.2', dst: '10.0.0.100', sport: 5001, dport: 40123, proto: 6 },
    timeout: 431990,
    tcpState: 'ESTABLISHED',
    assured: true,
    seenReply: true,
    mark: 7,
  });
  t.same(insertArgs(e!), ['-I', '-p', 'tcp', '-s', '10.0.0.1', '-d', '10.0.0.2', '--sport', '40123', '--dport', '5001', '--state', 'ESTABLISHED', '-t', '431990', '-u', 'ASSURED,SEEN_REPLY', '-m', '7', '--src-nat', '10.0.0.100:40123']);
});

t.test('an unreplied UDP entry without NAT: no state, no NAT flags, no SEEN_REPLY', async (t) => {
  const e = parseConntrackLine('ipv4     2 udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=20000 dport=9000 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=9000 dport=20000 mark=0 use=1');
  t.equal(e?.seenReply, false);
  t.equal(e?.tcpState, undefined);
  t.same(insertArgs(e!), ['-I', '-p', 'udp', '-s', '10.0.0.1', '-d', '10.0.0.2', '--sport', '20000', '--dport', '9000', '-t', '29', '-m', '0']);
  t.equal(parseConntrackLine('ipv4     2 icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=1 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=1 mark=0 use=1'), undefined, 'ICMP is not moved');
});

t.test('look-ups: an exact rule is two hash look-ups (either direction); a wildcard two dumps the kernel filters', async (t) => {
  const flow = { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, proto: 6 };
  t.same(lookupsFor([{ kind: 'exact', flow }]), [
    { kind: 'get', dir: 'orig', tuple: flow },
    { kind: 'get', dir: 'reply', tuple: flow },
  ]);
  t.same(lookupsFor([{ kind: 'wildcard', priority: 1, dst: '10.0.0.100/32' }]).map(describeLookup), ['dump orig dst=10.0.0.100', 'dump reply dst=10.0.0.100']);
  t.same(lookupsFor([{ kind: 'wildcard', priority: 1, src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 6, dport: 5001 }]).map(describeLookup), [
    'dump orig src=10.0.0.1 dst=10.0.0.2 proto=6 dport=5001',
    'dump reply src=10.0.0.1 dst=10.0.0.2 proto=6 dport=5001',
  ]);
  t.same(lookupsFor([{ kind: 'wildcard', priority: 1, src: '10.0.0.0/24', proto: 17 }]).map(describeLookup), ['dump orig proto=17', 'dump reply proto=17'], 'a /24 cannot be filtered by the kernel: the protocol\'s entries, checked afterwards');
  t.same(lookupsFor([{ kind: 'wildcard', priority: 1, src: '10.0.0.0/24' }]).map(describeLookup), ['dump orig (unfiltered)', 'dump reply (unfiltered)'], 'the one case that lists every entry');
});

t.test('look-ups for a selection: 1000 exact flows are 2000 gets in one exchange; identical look-ups run once', async (t) => {
  const many = Array.from({ length: 1000 }, (_, i) => ({ kind: 'exact' as const, flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 30000 + i, dport: 80, proto: 6 } }));
  t.equal(lookupsFor(many).length, 2000);
  t.ok(lookupsFor(many).every((l) => l.kind === 'get'), 'no dump for exact flows');
  const w = { kind: 'wildcard' as const, priority: 1, dst: '10.0.0.100/32' };
  t.same(lookupsFor([w, w]), lookupsFor([w]), 'the same wildcard twice: its two dumps once');
});

t.test('tool look-ups: an exact rule is one get plus a reply-tuple listing; a wildcard two filtered listings', async (t) => {
  t.same(queriesFor({ kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, proto: 6 } }), [
    ['-G', '-p', 'tcp', '-s', '10.0.0.1', '-d', '10.0.0.2', '--sport', '1', '--dport', '2'],
    ['-L', '-p', 'tcp', '--reply-src', '10.0.0.1', '--reply-dst', '10.0.0.2', '--reply-port-src', '1', '--reply-port-dst', '2'],
  ]);
  t.same(queriesFor({ kind: 'wildcard', priority: 1, dst: '10.0.0.100/32' }), [
    ['-L', '--orig-dst', '10.0.0.100'],
    ['-L', '--reply-dst', '10.0.0.100'],
  ]);
  t.same(queriesFor({ kind: 'wildcard', priority: 1, src: '10.0.0.0/24', proto: 17 }), [
    ['-L', '-p', 'udp', '--orig-src', '10.0.0.0', '--mask-src', '255.255.255.0'],
    ['-L', '-p', 'udp'],
  ], 'a /24 reply prefix cannot be filtered by the tool: the protocol listing, filtered afterwards');
});
