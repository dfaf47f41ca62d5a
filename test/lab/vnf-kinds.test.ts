// The lab spec schema's VNF types and state backends are the registries'
// (src/node/vnf-kinds.ts, src/state/factory.ts): one list each, checked here.
import t from 'tap';
import { labSpecSchema, validateSpec } from '../../src/lab/spec/index.js';
import { VNF_KIND_NAMES } from '../../src/node/vnf-kinds.js';
import { STATE_KINDS } from '../../src/state/factory.js';
import { validateNodeConfig } from '../../src/node/config.js';

type Schema = { properties: { state: { enum: string[] } }; definitions: { vnf: { properties: { type: { enum: string[] } } } } };

t.test('the schema enum of vnfs[].type is the VNF kinds registry', async (t) => {
  const s = labSpecSchema() as unknown as Schema;
  t.same([...s.definitions.vnf.properties.type.enum].sort(), [...VNF_KIND_NAMES].sort());
});

t.test('the schema enum of state is the state manager registry', async (t) => {
  const s = labSpecSchema() as unknown as Schema;
  t.same([...s.properties.state.enum].sort(), [...STATE_KINDS].sort());
});

t.test('a lab spec with linux instances validates; an unknown kind is refused naming the choices', async (t) => {
  const base = {
    name: 'k',
    hosts: [{ name: 'client', ip: '10.0.0.1/24' }, { name: 'server', ip: '10.0.0.2/24' }],
    switches: [{ name: 's1' }, { name: 's2' }],
    links: [['client', 's1'], ['s1', 'v1'], ['v1', 's2'], ['s2', 'server']],
  };
  const ok = validateSpec({ ...base, vnfs: [{ name: 'v1', type: 'linux' }] });
  t.ok(ok.ok, JSON.stringify(ok.ok ? '' : ok.errors));
  if (ok.ok) t.equal(ok.spec.vnfs[0]!.type, 'linux');
  const bad = validateSpec({ ...base, vnfs: [{ name: 'v1', type: 'bogus' }] });
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.errors.map((e) => e.message).join('\n'), /counter|linux/);
});

t.test('node configs take the registry kinds', async (t) => {
  const c = validateNodeConfig({ name: 'n', listen: { unix: '/tmp/x.sock' }, instances: [{ name: 'v1', kind: 'linux', ifaces: ['eth0', 'eth1'] }] });
  t.equal(c.instances[0]!.kind, 'linux');
  t.throws(() => validateNodeConfig({ name: 'n', listen: { unix: '/tmp/x.sock' }, instances: [{ name: 'v1', kind: 'nope', ifaces: ['eth0', 'eth1'] }] }));
});

t.test('the userspace pair spec validates: two userspace instances, state estate, stamps checked', async (t) => {
  const { loadSpec } = await import('../../src/lab/spec/index.js');
  const { specAsset } = await import('../../src/lab/spec/assets.js');
  const { vnfKind, userspaceProcess } = await import('../../src/node/vnf-kinds.js');
  const spec = loadSpec(specAsset('userspace-pair.yaml'));
  t.same(spec.vnfs.map((v) => v.type), ['userspace', 'userspace']);
  t.equal(spec.state, 'estate');
  t.ok(spec.vnfs.every((v) => vnfKind(v.type).stamps), 'its VNFs stamp: sinks check stamps');
  t.equal(userspaceProcess('userspace'), 'userspace', 'its instances run the userspace VNF process');
  t.equal(userspaceProcess('linux'), undefined);
  t.equal(userspaceProcess('counter'), undefined);
});
