// PacketSocketDrops: what another process's packet sockets dropped, read
// through our copies of its fds (pidfd_getfd), as a BMv2 lab reads what its
// switches' libpcap rings dropped. A child process binds a packet socket to
// b0 with the smallest receive buffer and never reads it; frames sent into
// b0 beyond what that buffer holds are dropped by the socket and by nothing
// else: the count is exact, and reading it again (the kernel resets it on
// every read) neither loses nor counts twice.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { objectsDir } from '../helpers/lab.js';
import { testNetns } from '../helpers/netns.js';
import { BpfObjectSpec, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth } from '../../src/net/iproute.js';
import { udpFrame } from '../../src/net/frame.js';
import { PacketSocketDrops, PacketSocketDropsError } from '../../src/net/packet-socket-drops.js';

// binds, says so, then sleeps without reading until its stdin closes
const LISTENER = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
s.bind(('b0', 0))
print('bound', flush=True)
sys.stdin.read()
`;

t.test("a process's packet socket that cannot keep up: every frame it dropped counted, once", async (t) => {
  const ns = testNetns(t, 'psd');
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  createVeth({ name: 'a0', netns: ns }, { name: 'b0', netns: ns });
  const child = spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-c', LISTENER], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.stdin?.end();
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  t.equal(line.toString().trim(), 'bound', 'the child bound its socket to b0');

  const drops = PacketSocketDrops.adopt(child.pid!);
  t.teardown(() => drops.close());
  const b0 = ifindexOf('b0', ns);
  t.same(drops.interfaces(), [b0], "one packet socket found among the child's fds, bound to b0");
  t.equal(drops.read().get(b0), 0n, 'nothing dropped yet');

  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  // a veth takes frames XDP transmits into it only with a program of its own: xdp_pass, on to the stack and the socket (as the BMv2 labs do)
  const pass = BpfObjectSpec.open(path.join(objectsDir, 'pass.bpf.o')).load();
  t.teardown(() => pass.close());
  const link = pass.program('xdp_pass').attachXdp('b0', { netns: ns });
  t.teardown(() => link.close());
  const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(60), udpChecksum: false });
  // XDP_TX out of a0 in a live-frames run: 500 frames arrive at b0, where the child's socket takes what fits
  bench.program('bench_tx').run({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('a0', ns) }), repeat: 500, liveFrames: true, netns: ns });
  const sockets = Number(execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/packet']).toString().trim().split('\n').length - 1);
  t.equal(sockets, 1, 'one packet socket in the namespace');
  const first = drops.read().get(b0)!;
  t.ok(first > 450n && first < 500n, `${first} of the 500 frames dropped by the socket (the rest fit its buffer)`);
  t.equal(drops.read().get(b0), first, 'read again: the same sum (the kernel reset its count, we kept it)');

  drops.close();
  t.throws(() => drops.read(), PacketSocketDropsError, 'nothing reads after close');
  t.throws(() => PacketSocketDrops.adopt(2 ** 22 + 12345), PacketSocketDropsError, 'a process that is not there: a typed error');
});
