// SwitchArrivals on a real node process (`sharpctl node run`, in a
// namespace of its own) whose config lists a P4 switch's ports under
// p4Switches, their interfaces in another namespace (as BMv2's are in a
// Mininet host's): over its socket the node answers each port's kernel
// receive count, which grows by exactly the frames sent into the interface;
// a port whose interface is not there is left out; a switch it does not
// list is refused naming it; a Batch carries the call. A namespace that is
// not there stops the node's start, naming p4Switches.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNodeProcess, type LabNode } from '../../src/lab/lab-nodes.js';
import { validateNodeConfig } from '../../src/node/config.js';
import { NodeCallError } from '../../src/node/client.js';
import { BpfObjectSpec, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth } from '../../src/net/iproute.js';
import { udpFrame } from '../../src/net/frame.js';
import { objectsDir } from '../helpers/lab.js';
import { testNetns } from '../helpers/netns.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { startP4ReaderNode, stopAndDetachNodes } from '../helpers/node-procs.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

t.test("a node reads a P4 switch's ports in the switch's namespace: exactly the frames sent in, only interfaces that exist", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4arr-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const swNs = testNetns(t, 'p4sw');
  // no IPv6 chatter (router solicitations, MLD reports) on the veths: every frame counted is one sent here
  execFileSync('ip', ['netns', 'exec', swNs, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  createVeth({ name: 'a0', netns: swNs }, { name: 'b0', netns: swNs });
  const { proc, client } = await startP4ReaderNode(t, { dir, cli, p4Switches: [{ name: 's2', netns: swNs, ports: [{ name: 's2-vnf1', ifname: 'b0' }, { name: 's2-client', ifname: 'a0' }, { name: 's2-gone', ifname: 'nosuch0' }] }] });
  t.ok(proc.stderr.some((l) => /reading the ports of P4 switch\(es\) s2/.test(l)), "the node's log says what it reads");
  t.same(client.switches(), [], 'the node runs no switch of its own: s2 is driven over P4Runtime, elsewhere');

  // b0's receive side takes the frames: an XDP sink there, as BMv2's ports have a program for the agents' redirects
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  const sink = bench.program('bench_sink').attachXdp('b0', { netns: swNs });
  t.teardown(() => sink.close());
  const before = await client.switchArrivals('s2');
  t.same([...(before?.keys() ?? [])], ['s2-vnf1', 's2-client'], 'the ports whose interfaces exist, by port name; s2-gone left out');
  const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(60), udpChecksum: false });
  // XDP_TX in a live-frames run on a0: out of a0 into b0
  const N = 137;
  bench.program('bench_tx').run({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('a0', swNs) }), repeat: N, liveFrames: true, netns: swNs });
  const after = await client.switchArrivals('s2');
  t.equal(after!.get('s2-vnf1')! - before!.get('s2-vnf1')!, BigInt(N), `s2-vnf1 (b0) received exactly the ${N} frames sent`);
  t.equal(after!.get('s2-client'), before!.get('s2-client'), 's2-client (a0) received nothing');

  // in one turn of the event loop: one Batch
  const [x, y] = await Promise.all([client.switchArrivals('s2'), client.switchArrivals('s2')]);
  t.equal(client.batched.get('SwitchArrivals'), 2, 'two calls went in one Batch');
  t.same([x, y], [after, after], 'and answered as alone');

  const refused = await client.switchArrivals('s9').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(refused instanceof NodeCallError && refused.code === grpc.status.NOT_FOUND, 'a switch not in p4Switches: NOT_FOUND');
  t.match((refused as Error).message, /reads no P4 switch 's9' \(p4Switches: s2\)/, 'naming it and the ones it reads');
});

t.test("a P4 switch's namespace that is not there stops the node's start, naming p4Switches", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4arr-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nodeNs = testNetns(t, 'p4nd');
  const missing = uniqueName('p4gone');
  const config = validateNodeConfig({ name: uniqueName('p4n'), listen: { unix: path.join(dir, 'node.sock') }, stateDir: path.join(dir, 'state'), p4Switches: [{ name: 's2', netns: missing, ports: [{ name: 's2-vnf1', ifname: 'b0' }] }] });
  const configFile = path.join(dir, 'node.json');
  writeFileSync(configFile, JSON.stringify(config));
  const node: LabNode = { role: 'p4reader', netns: nodeNs, config, configFile };
  // whatever a node that did not get ready may have left
  t.teardown(() => stopAndDetachNodes([], [node], cli));
  const started = await startNodeProcess(node, { cli }).then(
    async (p) => {
      await stopAndDetachNodes([p], [node], cli);
      return undefined;
    },
    (e: unknown) => e,
  );
  t.match((started as Error | undefined)?.message, new RegExp(`p4Switches: network namespace ${missing} cannot be entered \\(ENOENT\\): a P4 switch's interfaces are read in their namespace`), 'the start fails, naming the field and the namespace');
});
