// SwitchArrivals with BMv2's pid (p4Switches.N.pidFile) on a real node
// process (`sharpctl node run`, in a namespace of its own): the node adopts
// the process's packet sockets and answers what each port's input ring
// dropped, exactly. Here BMv2 is a child python3 holding a packet socket on
// b0 with the smallest receive buffer, read only when told to (drain, which
// says how many frames it held): of the frames sent into b0, what it held and
// what the node says it dropped add up to all. A BMv2 restart (a new pid in
// the file) is followed; while the file names no live process the drops are
// not known. A pid file that cannot be read, or names a process that is not
// there, stops the node's start naming p4Switches.N.pidFile.
import t from 'tap';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { startNodeProcess, type LabNode } from '../../src/lab/lab-nodes.js';
import { validateNodeConfig } from '../../src/node/config.js';
import { BpfObjectSpec, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth } from '../../src/net/iproute.js';
import { udpFrame } from '../../src/net/frame.js';
import { objectsDir } from '../helpers/lab.js';
import { testNetns } from '../helpers/netns.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { startP4ReaderNode, stopAndDetachNodes } from '../helpers/node-procs.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

// binds, says so; on "drain" reads what its socket holds and says how many; exits when its stdin closes
const BMV2_LIKE = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
s.bind(('b0', 0))
s.setblocking(False)
print('bound', flush=True)
for line in sys.stdin:
    n = 0
    while True:
        try:
            s.recv(65536)
            n += 1
        except BlockingIOError:
            break
    print(n, flush=True)
`;

/** A BMv2 stand-in in namespace `ns`, ended on teardown (also on failure). */
async function bmv2Like(t: Test, ns: string): Promise<{ child: ChildProcessWithoutNullStreams; drain: () => Promise<number>; end: () => Promise<void> }> {
  const child = spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-c', BMV2_LIKE], { stdio: ['pipe', 'pipe', 'inherit'] }) as unknown as ChildProcessWithoutNullStreams;
  const end = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.stdin.end();
    await exited;
  };
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await end();
  });
  const next = async (): Promise<string> => ((await once(child.stdout, 'data')) as [Buffer])[0].toString().trim();
  t.equal(await next(), 'bound', 'the stand-in bound its socket to b0');
  return {
    child,
    drain: async () => {
      child.stdin.write('drain\n');
      return Number(await next());
    },
    end,
  };
}

t.test("a node given BMv2's pid file counts exactly what a port's input ring dropped, and follows a restart", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4drop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const swNs = testNetns(t, 'p4dsw');
  // no IPv6 chatter on the veths: every frame is one sent here
  execFileSync('ip', ['netns', 'exec', swNs, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  createVeth({ name: 'a0', netns: swNs }, { name: 'b0', netns: swNs });
  // a veth takes frames XDP transmits into it only with a program of its own: xdp_pass, on to the socket (as the BMv2 labs do)
  const pass = BpfObjectSpec.open(path.join(objectsDir, 'pass.bpf.o')).load();
  t.teardown(() => pass.close());
  const link = pass.program('xdp_pass').attachXdp('b0', { netns: swNs });
  t.teardown(() => link.close());
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(60), udpChecksum: false });
  // XDP_TX out of a0 in a live-frames run: into b0
  const send = (n: number): void => void bench.program('bench_tx').run({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('a0', swNs) }), repeat: n, liveFrames: true, netns: swNs });

  const first = await bmv2Like(t, swNs);
  // as a service manager writes it, relative to the config
  writeFileSync(path.join(dir, 'bmv2.pid'), `${first.child.pid}\n`);
  const { proc, client } = await startP4ReaderNode(t, { dir, cli, p4Switches: [{ name: 's2', netns: swNs, pidFile: 'bmv2.pid', ports: [{ name: 's2-vnf1', ifname: 'b0' }, { name: 's2-client', ifname: 'a0' }] }] });

  const before = await client.switchPortInputs('s2');
  t.same(before?.dropped, new Map([['s2-vnf1', 0n], ['s2-client', 0n]]), 'drops known, none yet: every port reads 0');
  send(500);
  const after = await client.switchPortInputs('s2');
  const held = await first.drain();
  const dropped = after!.dropped!.get('s2-vnf1')!;
  t.ok(dropped > 400n, `the socket could not keep up: ${dropped} dropped`);
  t.equal(dropped + BigInt(held), 500n, `exactly: ${dropped} dropped by the ring + ${held} it held = the 500 frames sent`);
  t.equal(after!.dropped!.get('s2-client'), 0n, 's2-client (a0, no socket there) dropped nothing');
  t.equal(after!.arrivals.get('s2-vnf1')! - before!.arrivals.get('s2-vnf1')!, 500n, 'and the same call answers the arrivals: all 500');
  t.same((await client.switchPortInputs('s2'))?.dropped, after?.dropped, 'read again: the same sums (the kernel reset its counts, the node kept them)');

  // BMv2 gone, its pid file still naming it: the drops are not known (our copies of its sockets let go)
  await first.end();
  t.equal((await client.switchPortInputs('s2'))?.dropped, undefined, 'its process gone: drops_known false');
  send(50);
  // restarted: a new pid in the file, its sockets adopted at the next reading
  const second = await bmv2Like(t, swNs);
  writeFileSync(path.join(dir, 'bmv2.pid'), `${second.child.pid}\n`);
  t.same((await client.switchPortInputs('s2'))?.dropped, new Map([['s2-vnf1', 0n], ['s2-client', 0n]]), "the new process's drops, from 0 (the dead one's frames are not counted)");
  send(500);
  const later = (await client.switchPortInputs('s2'))!.dropped!.get('s2-vnf1')!;
  t.equal(later + BigInt(await second.drain()), 500n, `after the restart, exactly again: ${later} dropped`);
  t.ok(proc.stderr.some((l) => new RegExp(`P4 switch s2: BMv2 is process ${second.child.pid} now`).test(l)), "the node's log says it follows the new process");
});

t.test('without pidFile: arrivals only, drops_known false', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4drop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const swNs = testNetns(t, 'p4dsw');
  createVeth({ name: 'a0', netns: swNs }, { name: 'b0', netns: swNs });
  const { client } = await startP4ReaderNode(t, { dir, cli, p4Switches: [{ name: 's2', netns: swNs, ports: [{ name: 's2-vnf1', ifname: 'b0' }] }] });
  const r = await client.switchPortInputs('s2');
  t.same([...(r?.arrivals.keys() ?? [])], ['s2-vnf1'], 'the arrivals');
  t.equal(r?.dropped, undefined, 'no drops');
});

t.test("a pid file that cannot be read, or names no process, stops the node's start naming p4Switches.N.pidFile", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4drop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const swNs = testNetns(t, 'p4dsw');
  createVeth({ name: 'a0', netns: swNs }, { name: 'b0', netns: swNs });
  const nodeNs = testNetns(t, 'p4dnd');
  // a process that was, and is no more
  const gone = spawn('true');
  await once(gone, 'exit');
  writeFileSync(path.join(dir, 'gone.pid'), `${gone.pid}\n`);
  writeFileSync(path.join(dir, 'junk.pid'), 'bmv2\n');
  // p4Switches.0 has none: the error names the entry that has it
  const startWith = async (pidFile: string): Promise<unknown> => {
    const name = uniqueName('p4dn');
    const s2 = { name: 's2', netns: swNs, ports: [{ name: 's2-vnf1', ifname: 'b0' }] };
    const config = validateNodeConfig({ name, listen: { unix: path.join(dir, `${name}.sock`) }, stateDir: path.join(dir, `state-${name}`), p4Switches: [{ name: 's1', netns: swNs, ports: [{ name: 's1-vnf1', ifname: 'a0' }] }, { ...s2, pidFile }] });
    const configFile = path.join(dir, `${name}.json`);
    writeFileSync(configFile, JSON.stringify(config));
    const node: LabNode = { role: 'p4reader', netns: nodeNs, config, configFile };
    // whatever a node that did not get ready may have left
    t.teardown(() => stopAndDetachNodes([], [node], cli));
    return startNodeProcess(node, { cli }).then(
      async (p) => {
        await stopAndDetachNodes([p], [node], cli);
        return undefined;
      },
      (e: unknown) => e,
    );
  };
  const missing = path.join(dir, 'nosuch.pid');
  t.match(((await startWith(missing)) as Error | undefined)?.message, new RegExp(`p4Switches\\.1\\.pidFile: cannot read ${missing}: ENOENT`), 'a missing file: named, with the cause');
  t.match(((await startWith(path.join(dir, 'junk.pid'))) as Error | undefined)?.message, /p4Switches\.1\.pidFile: .*junk\.pid holds no pid \(its first line: 'bmv2'\)/, 'a file without a pid');
  t.match(
    ((await startWith(path.join(dir, 'gone.pid'))) as Error | undefined)?.message,
    new RegExp(`p4Switches\\.1\\.pidFile: switch s2: process ${gone.pid}: .*takes root or CAP_SYS_PTRACE over it`),
    'a process that is not there: named, with what adopting it takes',
  );
});
