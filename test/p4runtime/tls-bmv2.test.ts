// P4Runtime over mutual TLS against a real simple_switch_grpc
// (--grpc-server-ssl --grpc-server-with-client-auth) in a private network
// namespace, with certificates made by `sharpctl certs`: the deployment
// spec's controller path with the controller's certificate pushes our
// pipeline; a client without a certificate, one with a certificate of
// another CA, a plaintext one (warned about, naming the switch), one that
// does not trust the switch's CA, and one expecting another switch name
// are each refused with a typed error naming the address and identities —
// and the switch runs what it ran before, tables unchanged.
// Skipped, with the reason printed, without BMv2 on PATH or root.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipelineCookie } from '../../src/dataplane/bmv2/p4runtime-switches.js';
import { P4_ARTIFACTS } from '../../src/dataplane/bmv2/artifacts.js';
import { bmv2Skip, startTlsBmv2 } from '../helpers/bmv2.js';
import { runSync } from '../helpers/cli.js';
import { inNetnsP4Runtime, type NetnsOutcome, type TlsFileOptions } from '../helpers/p4runtime-in-netns.js';
import { commandPath } from '../../src/util/command.js';

const skip = bmv2Skip || (commandPath('openssl') === undefined ? 'openssl is not on PATH (sharpctl certs needs it)' : false);
if (skip) t.comment(`P4Runtime TLS tests skipped: ${skip}`);

const certs = (args: string[]): void => {
  const r = runSync(['certs', ...args]);
  if (r.code !== 0) throw new Error(`sharpctl certs ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
};

t.test('P4Runtime with mutual TLS on BMv2: the controller with its certificate pushes the pipeline; others are refused and change nothing', { skip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = path.join(dir, 'certs');
  const other = path.join(dir, 'other');
  certs(['init', ca]);
  certs(['switch', 's1', '--dir', ca, '--ip', '127.0.0.1']);
  certs(['controller', 'ctl1', '--dir', ca]);
  certs(['init', other, '--name', 'other-ca']);
  certs(['controller', 'ctl1', '--dir', other]);

  const sw = await startTlsBmv2(t, { ca: path.join(ca, 'ca.crt'), cert: path.join(ca, 'switch-s1.crt'), key: path.join(ca, 'switch-s1.key') });
  const at = { address: sw.address, deviceId: sw.deviceId };
  const mine: TlsFileOptions = { ca: path.join(ca, 'ca.crt'), cert: path.join(ca, 'controller-ctl1.crt'), key: path.join(ca, 'controller-ctl1.key'), serverName: 's1' };

  const spec = (name: string, sw1: Record<string, unknown>): string => {
    const file = path.join(dir, `${name}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        controller: { name: 'ctl1', certs: 'certs', journal: 'journal' },
        // not connected here: connectP4RuntimeSwitches takes the switches only
        nodes: [{ name: 'vnf1', socket: '/run/sharpctl/vnf1.sock' }],
        switches: [{ name: 's1', target: 'bmv2', p4runtime: sw.address, deviceId: sw.deviceId, pipeline: 'push', ports: { 's1-client': { port: 1 }, 's1-vnf1': { port: 2, instance: 'vnf1', side: 0 } }, ...sw1 }],
      }),
    );
    return file;
  };

  // the spec names no certificate files: mutual TLS by default, with controller.certs' ca.crt and controller-ctl1.crt/.key
  const pushed = await inNetnsP4Runtime(sw.netns, { op: 'deploy', spec: spec('deploy', {}) });
  // the spec gives the switch no node (none runs here): that its ports are not read is the one warning
  t.same({ ...pushed, warnings: [] }, { ok: true, warnings: [], switches: ['s1'] }, 'the controller path connects with mutual TLS and pushes the pipeline');
  t.match(pushed.warnings, [/^switch s1: no node reads its ports .*: frames its input buffers drop are not seen$/], 'no warning but that no node reads its ports');
  t.equal(pushed.warnings.length, 1);
  const inspect = async (): Promise<NetnsOutcome & { ok: true }> => {
    const r = await inNetnsP4Runtime(sw.netns, { op: 'inspect', ...at, tls: mine });
    if (!r.ok) throw new Error(`inspect failed: ${r.error.message}`);
    return r;
  };
  const before = (await inspect()).snapshot!;
  const ours = pipelineCookie(readFileSync(P4_ARTIFACTS.p4info), readFileSync(P4_ARTIFACTS.bmv2Json));
  t.equal(before.cookie, ours.toString(), 'the switch runs our pipeline (its cookie)');
  t.equal(before.tables['port_info']!.length, 2, 'the port table the push wrote: two ports');
  t.equal(before.tables['tx_port']!.length, 2);

  const refusals: { what: string; run: () => Promise<NetnsOutcome>; name: string; message: RegExp; client: string | null; serverName: string | null; warning?: RegExp }[] = [
    {
      what: 'a TLS client without a certificate',
      run: () => inNetnsP4Runtime(sw.netns, { op: 'intrude', ...at, tls: { ca: mine.ca, serverName: 's1' } }),
      name: 'P4RuntimeCertificateRefusedError',
      message: /P4Runtime server at 127\.0\.0\.1:\d+: .*did not accept this client \(no certificate\)/,
      client: null,
      serverName: 's1',
    },
    {
      what: "a client with a certificate of another CA (the same name, 'ctl1')",
      run: () => inNetnsP4Runtime(sw.netns, { op: 'intrude', ...at, tls: { ...mine, cert: path.join(other, 'controller-ctl1.crt'), key: path.join(other, 'controller-ctl1.key') } }),
      name: 'P4RuntimeCertificateRefusedError',
      message: /P4Runtime server at 127\.0\.0\.1:\d+: .*did not accept the certificate of 'ctl1'/,
      client: 'ctl1',
      serverName: 's1',
    },
    {
      what: 'a plaintext client',
      run: () => inNetnsP4Runtime(sw.netns, { op: 'intrude', ...at }),
      name: 'P4RuntimeTransportMismatchError',
      message: /P4Runtime server at 127\.0\.0\.1:\d+: the connection closed before HTTP\/2 began: the server may require TLS \(this client speaks plaintext\)/,
      client: null,
      serverName: null,
    },
    {
      what: 'the spec with plaintext: true (warned about, naming the switch)',
      run: () => inNetnsP4Runtime(sw.netns, { op: 'deploy', spec: spec('plain', { plaintext: true }) }),
      name: 'P4RuntimeTransportMismatchError',
      message: /server may require TLS/,
      client: null,
      serverName: null,
      warning: /^switch s1: P4Runtime at 127\.0\.0\.1:\d+ in plaintext \(plaintext: true\)/,
    },
    {
      what: "a client that trusts another CA than the switch's",
      run: () => inNetnsP4Runtime(sw.netns, { op: 'intrude', ...at, tls: { ca: path.join(other, 'ca.crt'), cert: path.join(other, 'controller-ctl1.crt'), key: path.join(other, 'controller-ctl1.key'), serverName: 's1' } }),
      name: 'P4RuntimeUntrustedServerError',
      message: /the server's certificate is not signed by the CA this client trusts \(expected 's1'\)/,
      client: 'ctl1',
      serverName: 's1',
    },
    {
      what: 'the spec calling the switch by another name (its certificate names s1)',
      run: () => inNetnsP4Runtime(sw.netns, { op: 'deploy', spec: spec('renamed', { tls: { serverName: 's9' } }) }),
      name: 'P4RuntimeServerIdentityError',
      message: /the server's certificate names 's1', '127\.0\.0\.1', expected 's9'/,
      client: 'ctl1',
      serverName: 's9',
    },
  ];
  for (const r of refusals) {
    const got = await r.run();
    if (got.ok) {
      t.fail(`${r.what}: connected`);
      continue;
    }
    t.equal(got.error.name, r.name, `${r.what}: ${got.error.message}`);
    t.match(got.error.message, r.message);
    t.same([got.error.address, got.error.client, got.error.serverName], [sw.address, r.client, r.serverName], 'the error names the address and the identities');
    if (r.warning !== undefined) t.match(got.warnings.join('\n'), r.warning);
    else t.same(got.warnings, []);
    t.same((await inspect()).snapshot, before, `after ${r.what}: the same pipeline and tables`);
  }

  // the intrusion itself changes the switch when it is let in: the snapshot would have shown it
  const allowed = await inNetnsP4Runtime(sw.netns, { op: 'intrude', ...at, tls: mine });
  t.same(allowed, { ok: true, warnings: [] });
  const after = (await inspect()).snapshot!;
  t.equal(after.cookie, '42', 'with the right certificate the pipeline is replaced');
  t.not(after.cookie, before.cookie);
});
