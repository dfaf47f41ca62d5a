// A node config's p4Switches: the BMv2 switches on the node's host that the
// controller drives over P4Runtime, whose ports' receive counts the node
// reads (SwitchArrivals) and nothing else. Every problem names its path and
// the limit.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadNodeConfig, validateNodeConfig } from '../../src/node/config.js';

const listen = { unix: '/run/sharpt/sw2.sock' };
const s2 = { name: 's2', netns: 'sharp-lab-s2', ports: [{ name: 's2-client', ifname: 's2-eth1' }, { name: 's2-vnf1', ifname: 's2-eth2' }] };
const p4Node = { name: 'sw2', listen, p4Switches: [s2] };
const vnfNode = { name: 'vnfa', listen, instances: [{ name: 'vnf1', kind: 'counter', ifaces: ['eth0', 'eth1'] }] };

const problems = (value: unknown): string => {
  try {
    validateNodeConfig(value);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('the config was accepted');
};

t.test('accepted: a node that only reads P4 switch ports, and one beside VNF instances or its own switch', async (t) => {
  const c = validateNodeConfig(p4Node);
  t.same(c.p4Switches, [s2], 'kept as given');
  t.same([c.switches, c.instances], [[], []], 'a node reading P4 switch ports runs nothing else');
  t.same(validateNodeConfig({ ...vnfNode, p4Switches: [{ name: 's2', ports: [{ name: 's2-vnf1', ifname: 's2-eth2' }] }] }).p4Switches, [{ name: 's2', ports: [{ name: 's2-vnf1', ifname: 's2-eth2' }] }], "netns optional: the node's own namespace");
  const own = { name: 's1', ports: [{ name: 's1-client', ifname: 'eth0', role: 'host' }] };
  t.ok(validateNodeConfig({ name: 's1', listen, switches: [own], p4Switches: [s2] }), 'beside an XDP switch of its own');
  t.ok(validateNodeConfig({ ...p4Node, p4Switches: [s2, { ...s2, name: 's3', netns: 'sharp-lab-s3' }] }), 'the same interface names in two namespaces');
  t.ok(validateNodeConfig({ ...p4Node, p4Switches: [{ ...s2, ports: Array.from({ length: 64 }, (_, i) => ({ name: `p${i}`, ifname: `eth${i}` })) }] }), '64 ports');
  t.match(problems({ name: 'sw2', listen }), /\(top level\): the node runs nothing: give switches, instances and\/or p4Switches/, 'without it the node still must run something');
});

t.test('refused, the field named with the limit', async (t) => {
  const withPorts = (ports: unknown[]): unknown => ({ ...p4Node, p4Switches: [{ ...s2, ports }] });
  t.match(problems({ ...p4Node, p4Switches: [] }), /p4Switches: must NOT have fewer than 1 items/);
  t.match(problems({ ...p4Node, p4Switches: Array.from({ length: 65 }, (_, i) => ({ ...s2, name: `s${i}` })) }), /p4Switches: must NOT have more than 64 items/);
  t.match(problems(withPorts([])), /p4Switches\.0\.ports: must NOT have fewer than 1 items/);
  t.match(problems(withPorts(Array.from({ length: 65 }, (_, i) => ({ name: `p${i}`, ifname: `eth${i}` })))), /p4Switches\.0\.ports: must NOT have more than 64 items/);
  t.match(problems(withPorts([{ name: 's2-client', ifname: 'a-sixteen-chars!' }])), /p4Switches\.0\.ports\.0\.ifname: must NOT have more than 15 characters/);
  t.match(problems(withPorts([{ name: 's2 client', ifname: 'eth1' }])), /p4Switches\.0\.ports\.0\.name: must match pattern/);
  t.match(problems(withPorts([{ name: 's2-client' }])), /p4Switches\.0\.ports\.0: missing field 'ifname'/);
  t.match(problems(withPorts([{ name: 's2-client', ifname: 'eth1', role: 'host' }])), /p4Switches\.0\.ports\.0: unknown field 'role'/, 'the node knows the ports only by name and interface');
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, name: 's2/x' }] }), /p4Switches\.0\.name: must match pattern/);
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, netns: 'a b' }] }), /p4Switches\.0\.netns: must match pattern/);
  t.match(problems({ ...p4Node, p4Switches: [{ name: 's2' }] }), /p4Switches\.0: missing field 'ports'/);
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, pidFile: 7 }] }), /p4Switches\.0\.pidFile: must be string/);
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, pidFile: '' }] }), /p4Switches\.0\.pidFile: must NOT have fewer than 1 characters/);
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, pidFile: 'x'.repeat(4097) }] }), /p4Switches\.0\.pidFile: must NOT have more than 4096 characters/);
});

t.test('what the schema cannot say: a name twice, a switch the node runs itself, an interface twice', async (t) => {
  t.match(problems({ ...p4Node, p4Switches: [s2, s2] }), /p4Switches\.1\.name: 's2' twice/);
  t.match(problems({ ...p4Node, p4Switches: [{ ...s2, ports: [s2.ports[0], { ...s2.ports[1], name: 's2-client' }] }] }), /p4Switches\.0\.ports\.1\.name: 's2-client' twice in switch s2/);
  const own = { name: 's2', ports: [{ name: 's2-client', ifname: 'eth0', role: 'host' }] };
  t.match(problems({ ...p4Node, switches: [own] }), /p4Switches\.0\.name: 's2' is a switch this node runs itself \(switches\)/);
  t.match(problems({ ...p4Node, p4Switches: [s2, { ...s2, name: 's3' }] }), /p4Switches\.1\.ports\.0\.ifname: interface s2-eth1 of namespace sharp-lab-s2 is used twice/);
  t.match(problems({ ...vnfNode, p4Switches: [{ name: 's2', ports: [{ name: 's2-vnf1', ifname: 'eth0' }] }] }), /p4Switches\.0\.ports\.0\.ifname: interface eth0 is used twice on this node/, "in the node's own namespace: not an interface of its instances");
});

t.test("pidFile: BMv2's pid file, relative to the config's folder like the config's other files", async (t) => {
  t.same(validateNodeConfig({ ...p4Node, p4Switches: [{ ...s2, pidFile: '/run/bmv2-s2.pid' }] }).p4Switches?.[0]?.pidFile, '/run/bmv2-s2.pid', 'accepted as given');
  t.ok(validateNodeConfig({ ...p4Node, p4Switches: [{ ...s2, pidFile: 'x'.repeat(4096) }] }), 'up to 4096 characters');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'node.json');
  writeFileSync(file, JSON.stringify({ ...p4Node, p4Switches: [{ ...s2, pidFile: 'run/bmv2.pid' }, { ...s2, name: 's3', netns: 'sharp-lab-s3', pidFile: '/abs/bmv2.pid' }, { ...s2, name: 's4', netns: 'sharp-lab-s4' }] }));
  const c = loadNodeConfig(file);
  t.same(
    c.p4Switches?.map((s) => s.pidFile),
    [path.join(dir, 'run/bmv2.pid'), '/abs/bmv2.pid', undefined],
    'a relative one resolved against the config, an absolute one kept, none left out',
  );
});
