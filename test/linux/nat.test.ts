// A NAT pair on the real kernel (src/lab/spec/nat-pair.yaml): two `linux`
// instances, each an nftables SNAT of the client side to the one shared
// outside address 10.0.0.100, the conntrack state manager moving the flows'
// entries on every handover.
//
//   1. UDP probes both ways through the NAT (client→server, and the server
//      answering the NATed flow at 10.0.0.100), handovers back and forth:
//      0 lost / reordered / duplicated.
//   2. A 200 MB TCP transfer client → server through the NAT, handovers back
//      and forth every 300 ms: byte-identical at both ends (sha256), no
//      reset, the server sees one outside address and port throughout;
//      retransmissions counted by the client's kernel (nstat).
//   3. The same handover without the state move: the new NAT has no entry,
//      drops the connection's packets (INVALID), the transfer stalls and
//      fails.
import t, { type Test } from 'tap';
import path from 'node:path';
import { testLab, objectsDir, type TestLab } from '../helpers/lab.js';
import { repoRoot } from '../helpers/env.js';
import { saveNatFigures } from '../helpers/nat-figures.js';
import { startTcpTransfer } from '../helpers/tcp-transfer.js';
import { loadSpec } from '../../src/lab/spec/index.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../../src/handover/engine.js';
import type { StateMover } from '../../src/handover/state-mover.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { ConntrackStateManager } from '../../src/state/conntrack-manager.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink } from '../../src/traffic/sink.js';
import { inNetns } from '../../src/net/iproute.js';
import { execFileSync } from 'node:child_process';
import { sleep } from '../../src/util/mutex.js';

const OUTSIDE = '10.0.0.100';
const OUTSIDE_MAC = '02:00:0a:00:00:64';
const TCP_PORT = 5001;
const TCP_SPORT = 40123;
const MB = 1 << 20;

async function natLab(t: Test): Promise<TestLab> {
  return testLab(t, { spec: loadSpec(path.join(repoRoot, 'src/lab/spec/nat-pair.yaml')) });
}

const natRules = (l: TestLab): number[] =>
  l.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-nat1' || r.action.outPort === 's2-nat1')
    .map((r) => r.id);

function conntrackMover(l: TestLab): { mover: StateManagerMover; manager: ConntrackStateManager } {
  const manager = new ConntrackStateManager({ netnsOf: (i) => l.lab.topology.instances.find((x) => x.name === i)?.netns });
  return { mover: new StateManagerMover(manager), manager };
}

const netnsOf = (l: TestLab, node: string): string => `${l.lab.prefix}${node}`;

/** nstat counters of a namespace (absolute since the namespace was made; history not touched) */
function nstat(netns: string, names: readonly string[]): Record<string, number> {
  const out = inNetns(netns, 'nstat', ['-asz', ...names]);
  const r: Record<string, number> = {};
  for (const n of names) r[n] = Number(new RegExp(`^${n}\\s+(\\d+)`, 'm').exec(out)?.[1] ?? 0);
  return r;
}

/** the packet counters of an nft table's rules, in rule order */
function nftCounters(netns: string, table: string): number[] {
  const out = execFileSync('ip', ['netns', 'exec', netns, 'nft', 'list', 'table', 'ip', table], { encoding: 'utf8' });
  return [...out.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

/** The server's view: every TCP segment to port 5001, those from OUTSIDE:TCP_SPORT, and resets (both hosts). */
function watchTcp(l: TestLab): { server: () => { all: number; fromOutsidePort: number; rst: number }; clientRst: () => number } {
  const srv = netnsOf(l, 'server');
  const cli = netnsOf(l, 'client');
  execFileSync('ip', ['netns', 'exec', srv, 'nft', '-f', '-'], {
    input: `table ip sharp_watch {\n chain input {\n  type filter hook input priority filter; policy accept;\n  tcp dport ${TCP_PORT} counter\n  tcp dport ${TCP_PORT} ip saddr ${OUTSIDE} tcp sport ${TCP_SPORT} counter\n  tcp dport ${TCP_PORT} tcp flags rst counter\n }\n}\n`,
  });
  execFileSync('ip', ['netns', 'exec', cli, 'nft', '-f', '-'], {
    input: `table ip sharp_watch {\n chain input {\n  type filter hook input priority filter; policy accept;\n  tcp sport ${TCP_PORT} tcp flags rst counter\n }\n}\n`,
  });
  return {
    server: () => {
      const [all, fromOutsidePort, rst] = nftCounters(srv, 'sharp_watch');
      return { all: all!, fromOutsidePort: fromOutsidePort!, rst: rst! };
    },
    clientRst: () => nftCounters(cli, 'sharp_watch')[0]!,
  };
}

/** NAT drops at an instance: [invalid, new from outside] */
const natDrops = (l: TestLab, inst: string): number[] => nftCounters(netnsOf(l, inst), 'sharp_nat').slice(0, 2);

async function handoversWhile(l: TestLab, mover: StateMover, o: { rules: number[]; gapMs: number; while: () => boolean; max?: number; expectedPps?: number }): Promise<{ results: HandoverResult[]; at: string }> {
  const engine = new HandoverEngine(l.dp, { mover });
  const results: HandoverResult[] = [];
  let at = 'nat1';
  while (o.while() && results.length < (o.max ?? Infinity)) {
    await sleep(o.gapMs);
    if (!o.while()) break;
    const to = at === 'nat1' ? 'nat2' : 'nat1';
    const r = await engine.handover({ rules: o.rules, from: at, to, capacityPolicy: 'warn', ...(o.expectedPps === undefined ? {} : { expectedPps: o.expectedPps }) });
    results.push(r);
    if (flowMoved(r)) at = to;
  }
  return { results, at };
}

t.test('NAT pair: the lab is what the spec says', async (t) => {
  const l = await natLab(t);
  for (const i of l.lab.topology.instances) {
    t.equal(i.kind, 'linux', `${i.name} is a linux instance`);
    const rules = execFileSync('ip', ['netns', 'exec', i.netns!, 'nft', 'list', 'table', 'ip', 'sharp_nat'], { encoding: 'utf8' });
    t.match(rules, new RegExp(`snat to ${OUTSIDE.replaceAll('.', '\\.')}`), `${i.name} translates to ${OUTSIDE}`);
    t.equal(inNetns(i.netns!, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_tcp_loose']).trim(), '0', `${i.name}: no mid-stream pickup`);
  }
  t.match(inNetns(netnsOf(l, 'server'), 'ip', ['neigh', 'show', OUTSIDE]), OUTSIDE_MAC, 'the server reaches the outside address');
});

t.test('NAT pair: UDP probes both ways through the NAT, handovers back and forth with the conntrack move: 0 lost / reordered / duplicated', async (t) => {
  const l = await natLab(t);
  const { mover, manager } = conntrackMover(l);
  t.teardown(() => mover.close());
  const rules = natRules(l);
  t.equal(rules.length, 2);
  const { client, server } = l.lab;
  // client:20000 → server:9000, NATed to 10.0.0.100:20000; the server answers that flow at 10.0.0.100:20000
  const fSink = new TrafficSink({ objectsDir, netns: server.netns, ifname: server.ifname, stamps: false });
  const rSink = new TrafficSink({ objectsDir, netns: client.netns, ifname: client.ifname, stamps: false });
  const fGen = new TrafficGenerator({ objectsDir, netns: client.netns, ifname: client.ifname, srcMac: client.mac, dstMac: server.mac, srcIp: client.ip, dstIp: server.ip, flows: 1, basePort: 20000, dstPort: 9000 });
  const rGen = new TrafficGenerator({ objectsDir, netns: server.netns, ifname: server.ifname, srcMac: server.mac, dstMac: OUTSIDE_MAC, srcIp: server.ip, dstIp: OUTSIDE, flows: 1, basePort: 9000, dstPort: 20000 });
  t.teardown(() => {
    for (const x of [fGen, rGen, fSink, rSink]) x.close();
  });
  fGen.start(2000);
  await sleep(100); // the NAT has the flow's entry before the server answers
  rGen.start(2000);
  await sleep(200);
  let n = 0;
  const { results } = await handoversWhile(l, mover, { rules, gapMs: 150, while: () => n++ < 8 });
  await Promise.all([fGen.stop(), rGen.stop()]);
  await Promise.all([fSink.drain(fGen.sent), rSink.drain(rGen.sent)]);
  for (const [dir, r] of [['client→server (SNAT)', fSink.report(fGen.sentPerFlow())], ['server→client (reply, de-NAT)', rSink.report(rGen.sentPerFlow())]] as const) {
    t.ok(r.sent > 1000, `${dir}: ${r.sent} probes sent`);
    t.equal(r.delivered, r.sent, `${dir}: every probe delivered`);
    t.equal(r.lost + r.reordered + r.duplicated, 0, `${dir}: 0 lost, 0 reordered, 0 duplicated (${r.lost}/${r.reordered}/${r.duplicated})`);
    t.equal(r.stampsChecked, false, `${dir}: stamps not checked (linux instances do not stamp)`);
  }
  for (const h of results) {
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to} completed${h.reason ? ` (${h.reason})` : ''}`);
    t.equal(h.state?.records, 1, `handover ${h.id}: the UDP flow's conntrack entry moved`);
    t.equal(h.counts.held, h.counts.released);
  }
  const lookups = manager.commands.filter((c) => c[1] === 'ctnetlink-lookup');
  t.ok(lookups.length >= results.length, `${lookups.length} look-ups, through ctnetlink`);
  t.ok(
    lookups.every((c) => c.length > 2 && !c.some((x) => x.endsWith('(unfiltered)'))),
    'every dump was filtered by the kernel (no full-table dump)',
  );
});

t.test('NAT pair: a 200 MB TCP transfer through the NAT with handovers back and forth every 300 ms: byte-identical, no reset, one outside port', async (t) => {
  const l = await natLab(t);
  const { mover, manager } = conntrackMover(l);
  t.teardown(() => mover.close());
  const rules = natRules(l);
  const watch = watchTcp(l);
  const bytes = 200 * MB;
  const { client, server } = l.lab;
  const started = performance.now();
  const xfer = await startTcpTransfer(t, { client, server, port: TCP_PORT, sport: TCP_SPORT, bytes, rateBps: 40 * MB, idleS: 10 });
  await xfer.connected;
  const { results, at } = await handoversWhile(l, mover, { rules, gapMs: 300, while: xfer.running });
  const { sender, receiver } = await xfer.done;
  const seconds = (performance.now() - started) / 1000;
  const tcp = nstat(netnsOf(l, 'client'), ['TcpRetransSegs', 'TcpOutSegs', 'TcpExtTCPTimeouts', 'TcpExtTCPLossProbes', 'TcpExtTCPFastRetrans']);
  const srvStats = nstat(netnsOf(l, 'server'), ['TcpInSegs', 'TcpRetransSegs']);
  const seen = watch.server();

  t.equal(sender.error, null, `the sender finished without error (${sender.error})`);
  t.equal(receiver.error, null, `the receiver finished without error (${receiver.error})`);
  t.equal(sender.bytes, bytes, `sent ${bytes} bytes`);
  t.equal(receiver.bytes, bytes, `received ${receiver.bytes} bytes`);
  t.equal(receiver.sha256, sender.sha256, 'sha256 equal at both ends: byte-identical');
  t.same(receiver.peer, [OUTSIDE, TCP_SPORT], `the server's peer is ${OUTSIDE}:${TCP_SPORT}`);
  t.equal(receiver.extraConnections, 0, 'one connection, never re-established');
  t.equal(seen.fromOutsidePort, seen.all, `all ${seen.all} segments the server got came from ${OUTSIDE}:${TCP_SPORT}`);
  t.equal(seen.rst, 0, 'no reset reached the server');
  t.equal(watch.clientRst(), 0, 'no reset reached the client');
  t.ok(results.length >= 6, `${results.length} handovers during the transfer`);
  for (const h of results) {
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to} completed${h.reason ? ` (${h.reason})` : ''}`);
    t.equal(h.counts.overflow, 0n, `handover ${h.id}: no ring overflow`);
  }
  t.ok(
    results.every((h) => (h.state?.records ?? 0) >= 1),
    'every handover moved the connection\'s conntrack entry',
  );
  const drops = ['nat1', 'nat2'].map((i) => natDrops(l, i));
  t.same(drops, [[0, 0], [0, 0]], 'neither NAT dropped a packet (invalid, or new from the outside)');
  const held = results.map((h) => Number(h.counts.held));
  const stateMs = results.map((h) => h.stateMs);
  const summary = {
    bytes,
    seconds: Number(seconds.toFixed(2)),
    throughputMBps: Number((bytes / MB / sender.seconds).toFixed(1)),
    pacedMBps: 40,
    handovers: results.length,
    endedAt: at,
    clientTcp: tcp,
    serverTcp: srvStats,
    heldPerHandover: { min: Math.min(...held), max: Math.max(...held) },
    stateMoveMs: { min: Number(Math.min(...stateMs).toFixed(1)), max: Number(Math.max(...stateMs).toFixed(1)) },
    handoverMs: { max: Number(Math.max(...results.map((h) => h.durationMs)).toFixed(1)) },
    conntrackCommands: manager.commands.length,
  };
  t.comment(`TCP with state move: ${JSON.stringify(summary)}`);
  saveNatFigures('withStateMove', summary);
});

t.test('NAT pair: the same handover WITHOUT the state move breaks the connection (the new NAT drops its packets)', async (t) => {
  const l = await natLab(t);
  const rules = natRules(l);
  const watch = watchTcp(l);
  const { client, server } = l.lab;
  const xfer = await startTcpTransfer(t, { client, server, port: TCP_PORT, sport: TCP_SPORT, bytes: 200 * MB, rateBps: 40 * MB, idleS: 3 });
  await xfer.connected;
  await sleep(1000);
  const before = watch.server().all;
  // a mover that moves nothing: the NAT's conntrack entry stays behind
  const noStateMove: StateMover = { name: 'none', move: async () => ({ records: 0, bytes: 0 }) };
  const { results } = await handoversWhile(l, noStateMove, { rules, gapMs: 0, while: xfer.running, max: 1 });
  t.equal(results[0]?.outcome, 'completed', 'the handover itself completed (SHarP moved the rules, nothing lost in the data plane)');
  t.equal(results[0]?.state?.records, 0, 'no state moved');
  const { sender, receiver } = await xfer.done;
  const drops = natDrops(l, 'nat2');
  const tcp = nstat(netnsOf(l, 'client'), ['TcpRetransSegs', 'TcpExtTCPTimeouts']);
  t.not(sender.error, null, `the sender failed: ${sender.error}`);
  t.ok(receiver.bytes < 200 * MB, `the server got ${(receiver.bytes / MB).toFixed(1)} MB of 200 MB`);
  t.ok(drops[0]! > 0, `the new NAT (nat2) dropped ${drops[0]} mid-stream packets as INVALID (no conntrack entry, no pickup)`);
  const after = watch.server().all;
  t.comment(`TCP without state move: server segments before the handover ${before}, at the end ${after}; nat2 drops invalid/new-from-outside ${drops.join('/')}; client ${JSON.stringify(tcp)}; sender error ${sender.error}`);
  saveNatFigures('withoutStateMove', { receivedMB: Number((receiver.bytes / MB).toFixed(1)), nat2Drops: { invalid: drops[0], newFromOutside: drops[1] }, clientTcp: tcp, senderError: sender.error });
});
