// The conntrack state manager's pure parts: parsing `conntrack -o extended`,
// the -I arguments that recreate an entry (NAT mapping included), and the
// filtered look-ups per rule match (never an unfiltered dump).
import t from 'tap';
import { parseConntrackLine, insertArgs, queriesFor, queriesForSelection } from '../../src/state/conntrack-manager.js';

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

t.test('look-ups: an exact rule is one get plus a reply-tuple listing; a wildcard two filtered listings', async (t) => {
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

t.test('look-ups for a selection: exact flows of one address pair share two listings; identical queries run once', async (t) => {
  const exact = (sport: number, dst = '10.0.0.2') => ({ kind: 'exact' as const, flow: { src: '10.0.0.1', dst, sport, dport: 80, proto: 6 } });
  const many = Array.from({ length: 1000 }, (_, i) => exact(30000 + i));
  t.same(queriesForSelection([...many, exact(5, '10.0.0.3')]), [
    ['-L', '-p', 'tcp', '--orig-src', '10.0.0.1', '--orig-dst', '10.0.0.2'],
    ['-L', '-p', 'tcp', '--reply-src', '10.0.0.1', '--reply-dst', '10.0.0.2'],
    ...queriesFor(exact(5, '10.0.0.3')),
  ], '1000 exact flows to one host: 2 listings; a lone flow to another: its get and listing');
  const w = { kind: 'wildcard' as const, priority: 1, dst: '10.0.0.100/32' };
  t.same(queriesForSelection([w, w]), queriesFor(w), 'the same wildcard twice: its two listings once');
});
