// The node's pin store: a switch and agents loaded with pinning by a child
// process keep forwarding after it is SIGKILLed, a new process adopts them
// (same links, maps, rules; counters continue), foreign XDP programs are
// never clobbered without replace, and detach leaves nothing behind.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { PinStore, PinMismatchError, PinStateError, PinStoreError, parseManifest, PIN_MANIFEST_VERSION } from '../../src/node/pins.js';
import { XdpDataPlane } from '../../src/dataplane/xdp/xdp-dataplane.js';
import { BpfCollection, BpfMap, XdpBusyError, attachedXdp, bpfNative, ifindexOf, inspectPin, queryXdp } from '../../src/bpf/index.js';
import { createLabFromSpec, destroyLab, installRules, standardSpec, type NetnsLab } from '../../src/lab/netns-lab.js';
import { linkExists } from '../../src/net/iproute.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink } from '../../src/traffic/sink.js';
import type { Rule } from '../../src/dataplane/types.js';
import { objectsDir } from '../helpers/lab.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { AGENT_ANCHOR_IFNAME } from '../../src/dataplane/xdp/agents.js';

const loader = path.join(repoRoot, 'dist/test/node/pin-loader.js');

/** A lab without a data plane and a node name; on teardown the node's pins go first, then the lab. */
function pinLab(t: Test): { lab: NetnsLab; node: string } {
  const prefix = `${uniqueName('pin')}-`;
  const node = uniqueName('node');
  const lab = createLabFromSpec(standardSpec(), prefix);
  t.teardown(() => {
    try {
      PinStore.open({ node }).detach();
    } finally {
      destroyLab(prefix);
    }
  });
  return { lab, node };
}

interface LoaderReport {
  ready: boolean;
  pid: number;
  pinDir: string;
  location: string;
  rules: Rule[];
}

/** Runs the loader in a child process until it reports; returns the report and a SIGKILL that resolves on exit. */
async function startLoader(t: Test, args: object): Promise<{ report: LoaderReport; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, [loader, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
  // also on failure: a live loader would keep its programs loaded
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const report = await new Promise<LoaderReport>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined && out.includes('\n')) resolve(JSON.parse(line) as LoaderReport);
    });
    child.once('exit', (code) => reject(new Error(`loader exited (${code}) before reporting: ${err.trim()}`)));
  });
  return {
    report,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

function traffic(t: Test, lab: NetnsLab, flows: number): { fw: { gen: TrafficGenerator; sink: TrafficSink }; rv: { gen: TrafficGenerator; sink: TrafficSink } } {
  const pair = (from: NetnsLab['client'], to: NetnsLab['client']): { gen: TrafficGenerator; sink: TrafficSink } => {
    const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname });
    t.teardown(() => sink.close());
    const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows });
    t.teardown(() => gen.close());
    return { gen, sink };
  };
  return { fw: pair(lab.client, lab.server), rv: pair(lab.server, lab.client) };
}

/** Every interface of the topology and the XDP program it runs (0: none). */
function attachedIds(lab: NetnsLab): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of lab.topology.switches) for (const p of s.ports) out.set(`${s.netns}/${p.ifname}`, queryXdp(ifindexOf(p.ifname, s.netns), s.netns).progId);
  for (const i of lab.topology.instances) for (const f of i.ifaces) out.set(`${i.netns}/${f}`, queryXdp(ifindexOf(f, i.netns), i.netns).progId);
  return out;
}

/** Whether a program id is still loaded (the kernel frees programs after an RCU grace period: wait a little). */
async function progGone(id: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    try {
      bpfNative.closeFd(bpfNative.progGetFdById(id));
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

t.test('pinned switch and agents outlive a SIGKILLed loader, are adopted, and detach cleanly', async (t) => {
  const { lab, node } = pinLab(t);
  const { fw, rv } = traffic(t, lab, 4);
  const { report, kill } = await startLoader(t, { node, objectsDir, topology: lab.topology, rules: lab.spec.rules });
  t.equal(report.rules.length, 4, 'the loader installed the four rules');
  const store = PinStore.open({ node });
  t.equal(store.pinDir, report.pinDir, 'a second process finds the same pin folder (from the manifest)');
  t.comment(`pins in ${store.pinDir} (${report.location}), manifest ${store.manifestPath}`);
  const manifest = store.manifest();
  t.equal(manifest.version, PIN_MANIFEST_VERSION);
  t.same(manifest.objects.map((o) => `${o.kind}.${o.name}:${o.state}`).sort(), ['agent.vnf1:ready', 'agent.vnf2:ready', 'switch.s1:ready', 'switch.s2:ready', 'vnf.vnf1:ready', 'vnf.vnf2:ready']);
  const before = attachedIds(lab);
  const linkIds = manifest.objects.flatMap((o) => o.links.map((l) => l.id)).sort((a, b) => a - b);

  // kill -9 in the middle of a stream: no frame may be lost
  const during = Promise.all([fw.gen.send(20_000), rv.gen.send(20_000)]);
  await new Promise((r) => setTimeout(r, 20));
  const sentBeforeKill = fw.gen.sent;
  await kill();
  const sentAtDeath = fw.gen.sent;
  await during;
  t.ok(sentBeforeKill > 0 && sentAtDeath < 20_000, `the loader died mid-stream (forward: ${sentBeforeKill} sent before the kill, ${20_000 - sentAtDeath} after its death)`);
  await Promise.all([fw.sink.drain(20_000), rv.sink.drain(20_000)]);
  for (const [name, p] of [['forward', fw], ['reverse', rv]] as const) {
    const r = p.sink.report(p.gen.sentPerFlow());
    t.equal(r.delivered, 20_000, `${name}: every frame sent across the SIGKILL delivered`);
    t.equal(r.lost + r.reordered + r.duplicated + r.stampMismatches, 0, `${name}: none lost, reordered or duplicated; VNF stamps continuous (tail call intact)`);
  }
  t.same(attachedIds(lab), before, 'every interface runs the same program after the loader died');

  // the owner is dead: traffic still flows, through the VNF
  await Promise.all([fw.gen.send(5000), rv.gen.send(5000)]);
  await Promise.all([fw.sink.drain(25_000), rv.sink.drain(25_000)]);
  for (const [name, p] of [['forward', fw], ['reverse', rv]] as const) {
    const r = p.sink.report(p.gen.sentPerFlow());
    t.equal(r.delivered, 25_000, `${name}: 5000 more frames delivered while no process owned the data plane`);
    t.equal(r.stampMismatches, 0, `${name}: the VNF kept counting per flow`);
  }
  const sw1 = manifest.objects.find((o) => o.kind === 'switch' && o.name === 's1')!;
  const chainPin = path.join(store.pinDir, 'agent-vnf1', 'map-vnf_chain');
  const chain = BpfMap.fromPin(chainPin);
  const vnfProg = manifest.objects.find((o) => o.kind === 'vnf' && o.name === 'vnf1')!.programs.find((p) => p.name === 'vnf_counter')!;
  t.equal(chain.lookup(Buffer.alloc(4))?.readUInt32LE(0), vnfProg.id, 'the pinned vnf_chain still holds the VNF program after the loader died');
  chain.close();

  t.test('a new process adopts everything', async (t) => {
    const dp = await XdpDataPlane.adopt({ pins: { store } });
    let detached = false;
    t.teardown(async () => {
      if (!detached) await dp.close();
    });
    t.same(dp.rules(), report.rules, 'the rule table is read back from the maps as the loader installed it');
    const toVnf1 = dp.rules().find((r) => r.switch === 's1' && r.action.outPort === 's1-vnf1')!;
    t.same(await dp.ruleCounters(toVnf1.id), { packets: 25_000n, bytes: 25_000n * 128n }, 'the rule counters counted through the death');
    t.same(dp.pinnedSwitch('s1')!.links.map((l) => l.id), sw1.links.map((l) => l.id), 'the same link ids');
    const s1 = lab.topology.switches[0]!;
    const pinnedPorts = BpfMap.fromPin(path.join(store.pinDir, 'switch-s1', 'map-ports'));
    t.teardown(() => pinnedPorts.close());
    t.equal(dp.switchObject('s1').map('ports').info.id, pinnedPorts.info.id, 'the adopted ports map is the pinned one');
    for (const p of s1.ports) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(ifindexOf(p.ifname, s1.netns));
      t.ok(pinnedPorts.lookup(key)?.equals(dp.switchObject('s1').map('ports').lookup(key)!), `port ${p.name}: its entry is still there`);
    }
    t.equal((await dp.exportState('vnf1', 'all')).length, 8, 'VNF state survived: one record per flow and direction');
    await dp.checkAgent('vnf1');
    t.pass('the adopted agents are attached');
    // a handover verb through the adopted agent: arm, mark, release
    await dp.armNew('vnf2', 9, 0);
    t.equal((await dp.agentStatus('vnf2', 9))?.role, 'new', 'handover state is written through the adopted maps');
    await dp.disarm('vnf2', 9);
    await Promise.all([fw.gen.send(3000), rv.gen.send(3000)]);
    await Promise.all([fw.sink.drain(28_000), rv.sink.drain(28_000)]);
    t.same(await dp.ruleCounters(toVnf1.id), { packets: 28_000n, bytes: 28_000n * 128n }, 'counters continue after adoption');
    t.equal(fw.sink.report(fw.gen.sentPerFlow()).stampMismatches, 0);
    const added = await dp.addRule({ switch: 's1', match: { kind: 'wildcard', priority: 5, dst: '10.9.0.0/16' }, action: { outPort: 's1-vnf2', phase: 0, handoverId: 0 } });
    t.equal(added.id, 5, 'new rule ids continue after the adopted ones');
    await dp.deleteRule(added.id);
    t.same(attachedIds(lab), before, 'adopting changed no attachment');

    const progIds = store.manifest().objects.flatMap((o) => o.programs.map((p) => p.id));
    await dp.detach();
    detached = true;
    await dp.detach();
    t.pass('detach is idempotent');
    t.ok([...attachedIds(lab).values()].every((id) => id === 0), 'no interface runs an XDP program');
    t.notOk(existsSync(store.pinDir), 'the pin folder is gone');
    t.notOk(existsSync(store.manifestPath), 'the manifest is gone');
    for (const i of lab.topology.instances) t.notOk(linkExists(AGENT_ANCHOR_IFNAME, i.netns), `no dispatcher anchor in ${i.name}'s namespace`);
    for (const id of progIds) t.ok(await progGone(id), `program ${id} unloaded`);
    t.equal(PinStore.open({ node }).manifest().objects.length, 0, 'a reopened store is empty');
    PinStore.open({ node }).detach();
  });
  t.same(linkIds.length, 12, 'links: 4 switch ports, 2x2 agent interfaces, 2 anchors');
});

t.test('adopting after a fresh process restart: a stale link is refused, a lost anchor re-created', async (t) => {
  const { lab, node } = pinLab(t);
  const { kill } = await startLoader(t, { node, objectsDir, topology: lab.topology, rules: lab.spec.rules });
  await kill();
  const store0 = PinStore.open({ node });
  const before = attachedIds(lab);
  // a second node process adopts and exits normally: its exit handlers close handles, never pinned objects
  const second = await startLoader(t, { node, objectsDir, topology: lab.topology, rules: [], adopt: true, exit: true });
  t.equal(second.report.rules.length, 4, 'the adopting process read the four rules back');
  await second.kill();
  t.same(attachedIds(lab), before, 'after its normal exit every interface runs the same program');
  for (const i of lab.topology.instances) t.ok(linkExists(AGENT_ANCHOR_IFNAME, i.netns), `${i.name}'s dispatcher anchor is still there`);
  t.same(PinStore.open({ node }).manifest().objects, store0.manifest().objects, 'and the manifest records the same objects');
  const store = PinStore.open({ node });
  // someone deleted vnf2's anchor: adoption re-creates it
  execFileSync('ip', ['-n', lab.topology.instances[1]!.netns!, 'link', 'del', AGENT_ANCHOR_IFNAME]);
  const dp = await XdpDataPlane.adopt({ pins: { store } });
  t.ok(linkExists(AGENT_ANCHOR_IFNAME, lab.topology.instances[1]!.netns), 'the anchor is back');
  const anchorLink = dp.agents().pinnedRecords('vnf2')!.agent.links.find((l) => l.purpose === 'anchor')!;
  t.equal(attachedXdp(ifindexOf(AGENT_ANCHOR_IFNAME, lab.topology.instances[1]!.netns), lab.topology.instances[1]!.netns)?.name, 'agent_replay', 'running agent_replay');
  t.ok(inspectPin(path.join(store.pinDir, 'agent-vnf2', anchorLink.pin))?.kind === 'link', 'and its link is pinned again');
  await dp.close();
  // a load over pinned objects is refused, and leaves them alone
  await t.rejects(XdpDataPlane.create(lab.topology, { objectsDir, pins: { store } }), XdpBusyError, 'loading again over the pinned switch is refused');
  t.equal(store.list().length, 6, 'the pins are untouched');
  // the manifest and the pins disagree: someone detached a port's link behind our back
  const l = store.get('switch', 's2')!.links[0]!;
  bpfNative.linkDetach(bpfNative.objGet(path.join(store.pinDir, 'switch-s2', l.pin)));
  await t.rejects(XdpDataPlane.adopt({ pins: { store } }), PinMismatchError, 'a detached link is reported, not adopted');
  t.ok(store.list().length === 6, 'a failed adoption changes nothing');
});

t.test('never clobber: a foreign XDP program is refused by name, replaced only with replace', async (t) => {
  const { lab, node } = pinLab(t);
  const store = PinStore.open({ node });
  const sw = lab.topology.switches[1]!;
  const port = sw.ports[0]!;
  const foreign = BpfCollection.load(path.join(objectsDir, 'pass.bpf.o'));
  t.teardown(() => foreign.close());
  const att = foreign.program('xdp_pass').attachXdpNetlink(port.ifname, { netns: sw.netns, mode: 'generic' });
  t.teardown(() => att.close());
  const id = foreign.program('xdp_pass').id;
  const err = await XdpDataPlane.create(lab.topology, { objectsDir, pins: { store } }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof XdpBusyError, 'refused');
  t.match((err as Error).message, new RegExp(`${port.ifname}.*program ${id} 'xdp_pass' \\(generic mode\\)`), 'the error names the program: id, name, mode');
  t.equal(queryXdp(ifindexOf(port.ifname, sw.netns), sw.netns).progId, id, 'the foreign program is still attached');
  t.equal(store.list().length, 0, 'nothing stayed pinned');
  t.ok([...attachedIds(lab).entries()].every(([k, v]) => v === 0 || k === `${sw.netns}/${port.ifname}`), 'nothing stayed attached');

  const dp = await XdpDataPlane.create(lab.topology, { objectsDir, pins: { store, replace: true } });
  t.teardown(() => dp.detach());
  const ours = dp.pinnedSwitch(sw.name)!.programs.find((p) => p.name === 'sharp_switch')!.id;
  t.equal(queryXdp(ifindexOf(port.ifname, sw.netns), sw.netns).progId, ours, 'with replace: our switch program runs there');
  await installRules(dp, lab.spec.rules);
  const { fw } = traffic(t, lab, 1);
  await fw.gen.send(500);
  await fw.sink.drain(500);
  t.equal(fw.sink.report(fw.gen.sentPerFlow()).delivered, 500, 'and forwards');
  await dp.detach();
  t.ok([...attachedIds(lab).values()].every((v) => v === 0), 'detach leaves no XDP program (the replaced one is not restored)');
  t.notOk(existsSync(store.pinDir), 'nor pins');
});

t.test('the store: location, manifest validation, private bpffs fallback', async (t) => {
  const node = uniqueName('store');
  const store = PinStore.open({ node });
  t.teardown(() => store.detach());
  t.ok(['bpffs', 'private-bpffs'].includes(store.location), `located: ${store.location} (${store.pinDir})`);
  t.equal(store.detach().pins, 0, 'detach of an empty store');
  t.notOk(existsSync(store.pinDir));
  t.notOk(existsSync('/sys/fs/bpf/sharpctl') && readdirSync('/sys/fs/bpf/sharpctl').length === 0, 'no empty parent folder left in /sys/fs/bpf');

  t.throws(() => parseManifest(JSON.stringify({ version: 99, node, pinDir: '/x', objects: [] }), { node, file: 'm.json' }), PinStoreError, 'another manifest version is refused');
  t.throws(() => parseManifest(JSON.stringify({ version: 1, node: 'other', pinDir: '/x', objects: [] }), { node, file: 'm.json' }), /node 'other'/, "another node's manifest is refused");
  t.throws(() => parseManifest(JSON.stringify({ version: 1, node, pinDir: '/x', objects: [{ kind: 'switch' }] }), { node, file: 'm.json' }), /objects\[0\]/, 'a malformed record is refused');
  t.throws(() => PinStore.open({ node: '../etc' }), PinStoreError, 'node names cannot escape the folder');
  t.throws(() => store.adoptable('switch', 's9'), PinStateError, 'adopting what is not pinned');

  // where mkdir is refused (a read-only bpffs stands in for EPERM), a private bpffs is mounted
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-pins-'));
  const ro = path.join(tmp, 'ro');
  const priv = path.join(tmp, 'private');
  execFileSync('mkdir', ['-p', ro]);
  execFileSync('mount', ['-t', 'bpf', '-o', 'ro', 'bpf', ro]);
  t.teardown(() => {
    for (const m of [priv, ro]) {
      try {
        execFileSync('umount', [m], { stdio: 'ignore' });
      } catch {
        // not mounted
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  });
  const fallback = PinStore.open({ node, bpffsDir: path.join(ro, 'sharpctl'), privateMount: priv, stateDir: path.join(tmp, 'state') });
  t.equal(fallback.location, 'private-bpffs', 'refused mkdir: falls back to a private bpffs');
  t.equal(fallback.pinDir, path.join(priv, node));
  t.equal(PinStore.open({ node, bpffsDir: path.join(ro, 'sharpctl'), privateMount: priv, stateDir: path.join(tmp, 'state') }).pinDir, fallback.pinDir, 'opened twice: the same mount, not a second one stacked');
  const mounts = execFileSync('findmnt', ['-rn', '-o', 'TARGET', priv], { encoding: 'utf8' }).trim().split('\n');
  t.equal(mounts.length, 1, 'one bpffs mounted there');
  fallback.detach();
  t.notOk(existsSync(fallback.pinDir));
});
