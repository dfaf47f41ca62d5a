// TxPacketCounter: the transmit packets of one interface, read again and
// again from one open /proc/net/dev in its namespace (NetdevFile, whose
// receive counts a BMv2 lab reads at its switch ports). For a veth whose peer
// runs XDP they are what the peer took from its rx ring: the release paces
// its rounds against them (src/dataplane/xdp/agents.ts).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { objectsDir } from '../helpers/lab.js';
import { testNetns } from '../helpers/netns.js';
import { BpfObjectSpec, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth, deleteLink } from '../../src/net/iproute.js';
import { udpFrame } from '../../src/net/frame.js';
import { NetdevFile, TxPacketCounter } from '../../src/net/netdev-stats.js';

t.test('counts what the XDP peer took, from one open file; undefined once the interface is gone', async (t) => {
  const ns = testNetns(t, 'txc');
  // no IPv6 chatter (router solicitations, MLD reports) that a0 would send of its own: every packet counted is ours
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  createVeth({ name: 'a0', netns: ns }, { name: 'b0', netns: ns });
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  const sink = bench.program('bench_sink').attachXdp('b0', { netns: ns });
  t.teardown(() => sink.close());
  const counter = TxPacketCounter.open('a0', ns);
  t.teardown(() => counter.close());
  // b0's receive side, as a BMv2 lab reads its switch ports' arrivals
  const file = NetdevFile.open(ns);
  t.teardown(() => file.close());
  const rx0 = file.rxPackets(['b0', 'nosuch0']);
  t.same([...rx0.keys()], ['b0'], 'rxPackets answers for the interfaces there only');
  const before = counter.read();
  t.type(before, 'bigint', 'a0 found in its namespace (this process is not in it)');
  const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(60), udpChecksum: false });
  // XDP_TX in a live-frames run: redirected out of a0, into b0's ring, drained by b0's XDP sink
  bench.program('bench_tx').run({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('a0', ns) }), repeat: 200, liveFrames: true, netns: ns });
  t.equal(counter.read()! - before!, 200n, 'the 200 frames b0 took, read again from the same file');
  t.equal(file.rxPackets(['b0']).get('b0')! - rx0.get('b0')!, 200n, 'and b0 received them (its rx count, from the same kind of file)');
  const none = TxPacketCounter.open('nosuch0', ns);
  t.teardown(() => none.close());
  t.equal(none.read(), undefined, 'an interface that is not there reads undefined');
  deleteLink('a0', ns);
  t.equal(counter.read(), undefined, 'and so does one that went away');
});
