// Attaching to real interfaces inside test namespaces, and live-frames
// injection observed on the other end of a veth pair.
import t from 'tap';
import { spawn } from 'node:child_process';
import { BpfCollection, ifindexOf, queryXdp, xdpMd, XdpAction, u32, u64, InterfaceNotFoundError, NetnsError } from '../../src/bpf/index.js';
import { ethernet } from '../../src/net/frame.js';
import { testObject } from '../helpers/env.js';
import { testVethPair } from '../helpers/netns.js';

t.test('XDP through a bpf_link: attached while open, gone when closed', async (t) => {
  const { nsB } = testVethPair(t, 'xl');
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const prog = coll.program('xdp_count');
  const link = prog.attachXdp('veth-b', { netns: nsB, mode: 'native' });
  const ifindex = ifindexOf('veth-b', nsB);
  t.equal(queryXdp(ifindex, nsB).progId, prog.id, 'the program is attached in native mode');
  t.equal(link.info().progId, prog.id);
  link.update(coll.program('xdp_fixture').fd, prog.fd);
  t.equal(queryXdp(ifindex, nsB).progId, coll.program('xdp_fixture').id, 'link update swapped the program');
  t.throws(() => link.update(prog.fd, prog.fd), { name: 'BpfError', code: 'EPERM' }, 'an update expecting the wrong program is refused');
  link.close();
  t.equal(queryXdp(ifindex, nsB).progId, 0, 'closing the link detached it');
});

t.test('XDP through netlink: replace semantics', async (t) => {
  const { nsA } = testVethPair(t, 'xn');
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const first = coll.program('xdp_count');
  const second = coll.program('xdp_fixture');
  const ifindex = ifindexOf('veth-a', nsA);
  const att = first.attachXdpNetlink('veth-a', { netns: nsA, mode: 'generic' });
  t.equal(queryXdp(ifindex, nsA).genericProgId, first.id, 'attached in generic mode');
  t.throws(() => second.attachXdpNetlink('veth-a', { netns: nsA, mode: 'generic' }), { name: 'BpfError', code: 'EBUSY' }, 'no silent replacement');
  t.throws(() => second.attachXdpNetlink('veth-a', { netns: nsA, mode: 'generic', expectProgram: second }), { name: 'BpfError', code: 'EEXIST' }, 'replace only if the expected program is there');
  const att2 = second.attachXdpNetlink('veth-a', { netns: nsA, mode: 'generic', expectProgram: first });
  t.equal(queryXdp(ifindex, nsA).progId, second.id, 'replaced atomically');
  att.release(); // the first attachment is gone already; forget it
  att2.close();
  t.equal(queryXdp(ifindex, nsA).progId, 0, 'close detached it');
});

t.test('tc clsact ingress and egress', async (t) => {
  const { nsA } = testVethPair(t, 'tc');
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const prog = coll.program('tc_fixture');
  const ingress = prog.attachTc('veth-a', { netns: nsA, direction: 'ingress', priority: 1, handle: 1 });
  const egress = prog.attachTc('veth-a', { netns: nsA, direction: 'egress', priority: 1, handle: 1 });
  t.equal(ingress.progId, prog.id);
  t.equal(egress.progId, prog.id);
  t.throws(() => prog.attachTc('veth-a', { netns: nsA, direction: 'ingress', priority: 1, handle: 1 }), { name: 'BpfError', code: 'EEXIST' });
  ingress.close();
  egress.close();
  t.notOk(ingress.attached);
});

t.test('a namespace given by the path of a process namespace', async (t) => {
  const { nsB } = testVethPair(t, 'pp');
  const child = spawn('ip', ['netns', 'exec', nsB, 'sleep', '60'], { stdio: 'ignore' });
  t.teardown(() => {
    child.kill();
  });
  // wait until the child has entered the namespace (same inode as the named one)
  const { statSync } = await import('node:fs');
  const wanted = statSync(`/run/netns/${nsB}`).ino;
  let nsPath = '';
  for (let i = 0; i < 100 && nsPath === ''; i++) {
    const p = `/proc/${child.pid}/ns/net`;
    try {
      if (statSync(p).ino === wanted) nsPath = p;
    } catch {
      /* not started yet */
    }
    if (nsPath === '') await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(nsPath, 'the process is inside the test namespace');
  t.equal(ifindexOf('veth-b', nsPath), ifindexOf('veth-b', nsB), 'the same interface, found through the process namespace');
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const link = coll.program('xdp_count').attachXdp('veth-b', { netns: nsPath });
  t.equal(queryXdp(ifindexOf('veth-b', nsB), nsB).progId, coll.program('xdp_count').id);
  link.close();
});

t.test('missing interface or namespace: clear errors', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  const prog = coll.program('xdp_count');
  t.throws(() => prog.attachXdp('no-such-if0'), { name: 'InterfaceNotFoundError', message: /interface 'no-such-if0' not found/ });
  t.throws(() => prog.attachXdp('lo', { netns: 'sharpt-no-such-ns' }), { name: 'NetnsError', code: 'ENOENT', message: /network namespace sharpt-no-such-ns cannot be entered/ });
  t.ok(InterfaceNotFoundError && NetnsError);
});

t.test('live frames: injected into a veth in a namespace, observed on the other end', async (t) => {
  const { nsA, nsB } = testVethPair(t, 'lf');
  const sender = BpfCollection.load(testObject('binding_fixture'));
  const receiver = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => {
    sender.close();
    receiver.close();
  });
  // the receiving end needs an XDP program, or the veth drops XDP_TX frames
  const link = receiver.program('xdp_count').attachXdp('veth-b', { netns: nsB });
  t.teardown(() => link.close());
  const frame = ethernet({ dst: '02:00:00:00:00:0a', src: '02:00:00:00:00:0b', etherType: 0x88b5, payload: Buffer.alloc(46, 7) });
  const n = 2000;
  const r = await sender.program('xdp_fixture').runAsync({
    data: frame,
    context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('veth-a', nsA) }),
    repeat: n,
    liveFrames: true,
    netns: nsA,
  });
  t.equal(r.retval, 0, 'live mode reports no verdict');
  // delivery to the peer is asynchronous (its NAPI poll); wait for the count
  let seen = 0n;
  for (let i = 0; i < 100 && seen < BigInt(n); i++) {
    seen = u64.decode(receiver.map('fx_array').lookup(u32.encode(5))!);
    if (seen < BigInt(n)) await new Promise((res) => setTimeout(res, 20));
  }
  t.equal(seen, BigInt(n), `all ${n} frames bounced out of veth-a (XDP_TX) and arrived at veth-b`);
  t.equal(u64.decode(sender.map('fx_array').lookup(u32.encode(0))!), BigInt(n), 'the sender program ran once per frame');
  t.equal(XdpAction.TX, 3);
});
