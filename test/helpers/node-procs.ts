/** Stopping node daemon processes a test started, and removing what they attached and pinned; probe traffic through their lab. */
import path from 'node:path';
import type { Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { detachLabNode, startNodeProcess, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { validateNodeConfig } from '../../src/node/config.js';
import { NodeClient } from '../../src/node/client.js';
import { nodeChannel, unixEndpoint } from '../../src/node/transport/index.js';
import { testNetns } from './netns.js';
import type { NetnsLab } from '../../src/lab/netns-lab.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../../src/traffic/sink.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from './env.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');

/** SIGTERM to each running process (5 s each at most), then `sharpctl node detach` of every node inside its namespace. */
export async function stopAndDetachNodes(procs: Iterable<NodeProcess>, nodes: readonly LabNode[], cli: string): Promise<void> {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      const exited = new Promise((r) => p.child.once('exit', r));
      p.child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
  }
  // what the nodes pinned goes with them: the interfaces as they were found
  for (const n of nodes) {
    const err = detachLabNode(n, cli);
    if (err !== undefined) console.error(`# detach of ${n.config.name} failed: ${err}`);
  }
}

/**
 * A real node process (`sharpctl node run`, in a namespace of its own) that
 * only reads P4 switches' ports (`p4Switches` as the config file says them:
 * relative paths stay relative), and a client on its socket; all stopped and
 * removed on teardown, also when the start fails.
 */
export async function startP4ReaderNode(t: Test, o: { dir: string; cli: string; p4Switches: unknown[] }): Promise<{ proc: NodeProcess; client: NodeClient; name: string }> {
  const name = uniqueName('p4n');
  const sock = path.join(o.dir, `${name}.sock`);
  const raw = { name, listen: { unix: sock }, stateDir: path.join(o.dir, `state-${name}`), p4Switches: o.p4Switches };
  const configFile = path.join(o.dir, `${name}.json`);
  writeFileSync(configFile, JSON.stringify(raw));
  const node: LabNode = { role: 'p4reader', netns: testNetns(t, 'p4nd'), config: validateNodeConfig(raw), configFile };
  const proc = await startNodeProcess(node, { cli: o.cli }).catch(async (e: unknown) => {
    // a node that did not get ready (startNodeProcess killed it) may still have pinned something
    await stopAndDetachNodes([], [node], o.cli);
    throw e;
  });
  t.teardown(() => stopAndDetachNodes([proc], [node], o.cli));
  const client = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(sock, name)) });
  t.teardown(() => client.close());
  return { proc, client, name };
}

/** Probe traffic both ways between the lab's client and server (`flows` flows each); `closers` get the generators and sinks. */
export function twoWayTraffic(lab: NetnsLab, closers: (() => void)[], flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] } {
  const gens: TrafficGenerator[] = [];
  const sinks: TrafficSink[] = [];
  for (const [from, to] of [
    [lab.client, lab.server],
    [lab.server, lab.client],
  ] as const) {
    const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname });
    const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows });
    closers.push(() => sink.close(), () => gen.close());
    gens.push(gen);
    sinks.push(sink);
  }
  return { gens, sinks };
}

/** Stops the generators, waits for every probe sent to arrive (or be counted lost), reports each direction. */
export async function finishTraffic(gens: TrafficGenerator[], sinks: TrafficSink[]): Promise<TrafficReport[]> {
  await Promise.all(gens.map((g) => g.stop()));
  await Promise.all(sinks.map((s, i) => s.drain(gens[i]!.sent)));
  return sinks.map((s, i) => s.report(gens[i]!.sentPerFlow()));
}

/** Every probe of both directions delivered once, in order, the VNF's stamps continuous. */
export function assertIntact(t: Test, reports: TrafficReport[], what: string): void {
  reports.forEach((r, i) => {
    const dir = `${what}, ${i === 0 ? 'client→server' : 'server→client'}`;
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `${dir}: every probe delivered once, in order, the VNF's counter continuous`);
  });
}
