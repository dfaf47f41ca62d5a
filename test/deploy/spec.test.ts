// The deployment spec's P4Runtime switches: what a valid one becomes, and
// every bad field refused with its path and the limit; how each switch is
// reached (mutual TLS by default on TCP, plaintext only when said, Unix
// sockets plaintext) and its certificate files checked at load, named by
// path. No root, no switch.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadDeploySpec, switchTransport, validateDeploySpec, type DeploySwitch } from '../../src/deploy/spec.js';

const base = { controller: { name: 'ctl1', certs: '/etc/sharp/certs', journal: '/var/lib/sharpctl/journal' }, nodes: [{ name: 'vnfa', socket: '/run/sharpctl/vnfa.sock' }] };
const noCerts = { ...base, controller: { name: 'ctl1', journal: '/var/lib/sharpctl/journal' } };
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

t.test("a switch's node: the node on its host that reads its ports' receive counts, one of the spec's nodes", async (t) => {
  const spec = validateDeploySpec({ ...base, nodes: [...base.nodes, { name: 'sw1', address: '10.9.0.5:7441' }], switches: [{ ...s1, node: 'sw1' }] });
  t.equal(spec.switches[0]!.node, 'sw1', 'kept as given');
  t.equal(validateDeploySpec(withSwitch({ ...s1, node: 'vnfa' })).switches[0]!.node, 'vnfa', 'a VNF node on the same host may read them');
  t.equal(validateDeploySpec(withSwitch(s1)).switches[0]!.node, undefined, 'optional: without it no node reads the ports');
  t.match(issues(withSwitch({ ...s1, node: 'sw9' })), /switches\.0\.node: 'sw9' is not a node of nodes \(vnfa\)/);
  t.match(issues(withSwitch({ ...s1, node: 'bad name' })), /switches\.0\.node: must match pattern/);
});

t.test('a switch on TCP: mutual TLS with controller.certs by default, the switch named by its certificate', async (t) => {
  const spec = validateDeploySpec(withSwitch(s1));
  t.same(switchTransport(spec.controller, spec.switches[0]!), {
    kind: 'tls',
    files: { ca: '/etc/sharp/certs/ca.crt', cert: '/etc/sharp/certs/controller-ctl1.crt', key: '/etc/sharp/certs/controller-ctl1.key' },
    from: { ca: 'controller.certs', cert: 'controller.certs', key: 'controller.certs' },
    serverName: 's1',
  });
  // per switch: some files and the name its certificate carries; the rest from controller.certs
  const own = validateDeploySpec(withSwitch({ ...s1, tls: { ca: '/etc/bmv2/ca.pem', serverName: 's1.lab.example' } }));
  t.same(switchTransport(own.controller, own.switches[0]!), {
    kind: 'tls',
    files: { ca: '/etc/bmv2/ca.pem', cert: '/etc/sharp/certs/controller-ctl1.crt', key: '/etc/sharp/certs/controller-ctl1.key' },
    from: { ca: 'tls', cert: 'controller.certs', key: 'controller.certs' },
    serverName: 's1.lab.example',
  });
  // no controller.certs: every file in the switch's tls
  const full = validateDeploySpec({ ...noCerts, switches: [{ ...s1, tls: { ca: 'a.crt', cert: 'c.crt', key: 'c.key' } }] });
  t.same(switchTransport(full.controller, full.switches[0]!), { kind: 'tls', files: { ca: 'a.crt', cert: 'c.crt', key: 'c.key' }, from: { ca: 'tls', cert: 'tls', key: 'tls' }, serverName: 's1' });
});

t.test('plaintext only when the spec says so; a Unix socket is plaintext; what does not fit is named with its path', async (t) => {
  t.match(
    issues({ ...noCerts, switches: [s1] }),
    /switches\.0\.p4runtime: switch s1 over TCP takes mutual TLS: add controller\.certs \(ca\.crt, controller-ctl1\.crt\/\.key\) or switches\.0\.tls \{ ca, cert, key \}; plaintext: true to run it without authentication/,
  );
  t.match(issues({ ...noCerts, switches: [{ ...s1, tls: { ca: 'a.crt' } }] }), /switches\.0\.p4runtime: .*switches\.0\.tls \{ cert, key \}/, 'only the fields missing are listed');
  const plain = validateDeploySpec({ ...noCerts, switches: [{ ...s1, plaintext: true }] });
  t.same(switchTransport(plain.controller, plain.switches[0]!), { kind: 'plaintext' }, 'plaintext: true needs no certificates');
  const unix = validateDeploySpec({ ...noCerts, switches: [{ ...s1, p4runtime: 'unix:/run/bmv2/s1.grpc' }] });
  t.same(switchTransport(unix.controller, unix.switches[0]!), { kind: 'unix' }, 'a Unix socket: plaintext, without certificates');
  t.match(issues(withSwitch({ ...s1, p4runtime: 'unix:/run/bmv2/s1.grpc', tls: { ca: 'a.crt' } })), /switches\.0\.tls: switch s1 is on a Unix socket \(unix:\/run\/bmv2\/s1\.grpc\): P4Runtime there is plaintext/);
  t.match(issues(withSwitch({ ...s1, plaintext: true, tls: { serverName: 's1' } })), /switches\.0\.plaintext: give tls \(mutual TLS\) or plaintext: true, not both/);
  t.match(issues(withSwitch({ ...s1, plaintext: 'yes' })), /switches\.0\.plaintext: must be boolean/);
  t.match(issues(withSwitch({ ...s1, tls: { ca: 'a.crt', pin: 'x' } })), /switches\.0\.tls: unknown field 'pin'/);
  t.match(issues(withSwitch({ ...s1, tls: { serverName: 'not a name' } })), /switches\.0\.tls\.serverName: must match pattern/);
  t.match(issues(withSwitch({ ...s1, tls: { cert: '' } })), /switches\.0\.tls\.cert: must NOT have fewer than 1 characters/);
});

t.test('loading a spec file: certificate paths relative to it, a missing file named by its path and the field it comes from', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-spec-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'certs'));
  writeFileSync(path.join(dir, 'certs', 'ca.crt'), '');
  const write = (sw: Record<string, unknown>): string => {
    const file = path.join(dir, 'deploy.json');
    writeFileSync(file, JSON.stringify({ ...base, controller: { name: 'ctl1', certs: 'certs', journal: 'journal' }, switches: [sw] }));
    return file;
  };
  const load = (file: string): string => {
    try {
      loadDeploySpec(file);
    } catch (e) {
      t.equal((e as Error).name, 'DeploySpecError');
      return (e as Error).message;
    }
    throw new Error('the spec was loaded');
  };
  const c = path.join(dir, 'certs');
  const missing = load(write(s1));
  t.match(missing, `controller.certs: no such file ${c}/controller-ctl1.crt (the cert of switch s1's mutual TLS, switches.0)`);
  t.match(missing, `controller.certs: no such file ${c}/controller-ctl1.key (the key of switch s1's mutual TLS, switches.0)`);
  t.notMatch(missing, /ca\.crt/, 'ca.crt is there');
  const own = load(write({ ...s1, tls: { cert: 'bmv2/ctl.crt', key: '/nowhere/ctl.key' } }));
  t.match(own, `switches.0.tls.cert: no such file ${dir}/bmv2/ctl.crt`, 'relative to the spec file');
  t.match(own, 'switches.0.tls.key: no such file /nowhere/ctl.key');
  writeFileSync(path.join(c, 'controller-ctl1.crt'), '');
  writeFileSync(path.join(c, 'controller-ctl1.key'), '');
  const ok = loadDeploySpec(write({ ...s1, tls: { ca: 'certs/ca.crt' } }));
  t.equal(ok.switches[0]!.tls!.ca, path.join(c, 'ca.crt'), 'the switch\'s files resolved against the spec folder');
  t.same(loadDeploySpec(write({ ...s1, plaintext: true })).switches[0]!.plaintext, true, 'plaintext: no files checked');
});
