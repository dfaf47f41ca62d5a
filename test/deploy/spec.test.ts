// The deployment spec's P4Runtime switches: what a valid one becomes, and
// every bad field refused with its path and the limit. No root, no switch.
import t from 'tap';
import { validateDeploySpec, type DeploySwitch } from '../../src/deploy/spec.js';

const base = { controller: { name: 'ctl1', journal: '/var/lib/sharpctl/journal' }, nodes: [{ name: 'vnfa', socket: '/run/sharpctl/vnfa.sock' }] };
const s1 = { name: 's1', target: 'bmv2', p4runtime: '127.0.0.1:9559', deviceId: 1, pipeline: 'existing', ports: { 's1-client': { port: 1 }, 's1-vnfa': { port: 2, instance: 'vnfa', side: 0 } } };
const withSwitch = (sw: Record<string, unknown>): unknown => ({ ...base, switches: [sw] });
const issues = (v: unknown): string => {
  try {
    validateDeploySpec(v);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('the spec was accepted');
};

t.test('a BMv2 switch over P4Runtime: ports in the order given, a spec without switches has none', async (t) => {
  const spec = validateDeploySpec(withSwitch(s1));
  const sw: DeploySwitch = spec.switches[0]!;
  t.same(sw, { ...s1, relayAround: false }, 'relayAround defaults to false: no rollback after switch-over through it');
  t.same(Object.keys(sw.ports), ['s1-client', 's1-vnfa'], 'slots follow the spec order');
  t.same(validateDeploySpec(base).switches, []);
  t.equal(validateDeploySpec(withSwitch({ ...s1, p4runtime: 'unix:/run/bmv2/s1.grpc', pipeline: 'push' })).switches[0]!.p4runtime, 'unix:/run/bmv2/s1.grpc');
});

t.test('every missing or bad field of a switch is named with its path', async (t) => {
  t.match(issues(withSwitch({ ...s1, pipeline: undefined })), /switches\.0: missing field 'pipeline'/);
  t.match(issues(withSwitch({ ...s1, pipeline: 'maybe' })), /switches\.0\.pipeline: must be one of "push", "existing"/);
  t.match(issues(withSwitch({ ...s1, target: 'tofino' })), /switches\.0\.target: must be one of "bmv2"/);
  t.match(issues(withSwitch({ ...s1, p4runtime: 'localhost' })), /switches\.0\.p4runtime: must match pattern/);
  t.match(issues(withSwitch({ ...s1, deviceId: -1 })), /switches\.0\.deviceId: must be >= 0/);
  t.match(issues(withSwitch({ ...s1, ports: {} })), /switches\.0\.ports: must NOT have fewer than 1 properties/);
  t.match(issues(withSwitch({ ...s1, ports: { 's1-client': { port: 511 } } })), /switches\.0\.ports\.s1-client\.port: must be <= 510/);
  t.match(issues(withSwitch({ ...s1, ports: { 's1-client': { port: 1, side: 2 } } })), /switches\.0\.ports\.s1-client\.side: must be one of 0, 1/);
  t.match(issues(withSwitch({ ...s1, ports: { 's1-client': { port: 1, speed: 10 } } })), /switches\.0\.ports\.s1-client: unknown field 'speed'/);
  t.match(issues(withSwitch({ ...s1, extra: 1 })), /switches\.0: unknown field 'extra'/);
  t.match(issues(withSwitch({ ...s1, relayAround: 'yes' })), /switches\.0\.relayAround: must be boolean/);
});

t.test('what the schema cannot say: the CPU port, a port number twice, a side without an instance, a name twice', async (t) => {
  t.match(issues(withSwitch({ ...s1, ports: { a: { port: 255 } } })), /switches\.0\.ports\.a\.port: 255 is the switch's CPU port/);
  t.match(issues(withSwitch({ ...s1, ports: { a: { port: 3 }, b: { port: 3 } } })), /switches\.0\.ports\.b\.port: BMv2 port 3 is port a already/);
  t.match(issues(withSwitch({ ...s1, ports: { a: { port: 3, side: 1 } } })), /switches\.0\.ports\.a\.side: only a port facing an instance has a side/);
  t.match(issues({ ...base, switches: [s1, { ...s1, deviceId: 2 }] }), /switches\.1\.name: 's1' twice/);
});
