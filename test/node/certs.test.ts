// Certificate tooling: what createCa / createNodeCert / createControllerCert
// / createSwitchCert write, checked with node:crypto and independently with
// `openssl verify`.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  caFiles,
  CaMissingError,
  CertExistsError,
  CertsUsageError,
  controllerFiles,
  createCa,
  createControllerCert,
  createNodeCert,
  createSwitchCert,
  EKU_CLIENT_AUTH,
  EKU_SERVER_AUTH,
  identityOf,
  loadTls,
  nodeFiles,
  showCert,
  switchFiles,
} from '../../src/node/transport/index.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-certs-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const dir = path.join(tmp, 'certs'); // made by createCa
const mode = (f: string): number => statSync(f).mode & 0o777;
const opensslOk = (...args: string[]): boolean => spawnSync('openssl', args, { stdio: 'ignore' }).status === 0;

t.test('a CA: EC P-256 key 0600, self-signed CA certificate, folder 0700', async (t) => {
  const ca = await createCa(dir);
  t.same([ca.kind, ca.name, ca.cert, ca.key], ['ca', 'sharp-ca', caFiles(dir).cert, caFiles(dir).key]);
  t.equal(mode(dir), 0o700);
  t.equal(mode(ca.key), 0o600);
  t.equal(mode(ca.cert), 0o644);
  const x = new X509Certificate(readFileSync(ca.cert));
  t.ok(x.ca, 'a CA certificate');
  t.ok(x.verify(x.publicKey), 'self-signed');
  t.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.same([ca.identity.name, ca.identity.role, ca.identity.issuer], ['sharp-ca', 'ca', 'sharp-ca']);
  t.match(execFileSync('openssl', ['pkey', '-in', ca.key, '-noout', '-text'], { encoding: 'utf8' }), /ASN1 OID: prime256v1/);
  t.match(execFileSync('openssl', ['x509', '-in', ca.cert, '-noout', '-text'], { encoding: 'utf8' }), /CA:TRUE.*Certificate Sign/s);
  t.same(readdirSync(dir).sort(), ['ca.crt', 'ca.key'], 'no scratch files left');
});

t.test('a node: serverAuth + clientAuth, CN and SAN DNS = its name, plus IPs and DNS names', async (t) => {
  const n = await createNodeCert(dir, 's1', { ips: ['10.9.0.2', 'fd00::2'], dns: ['s1.lab.example'] });
  t.same([n.cert, n.key], [nodeFiles(dir, 's1').cert, nodeFiles(dir, 's1').key]);
  t.equal(mode(n.key), 0o600);
  t.equal(mode(n.cert), 0o644);
  const id = n.identity;
  t.same([id.name, id.role, id.issuer, id.isCa], ['s1', 'node', 'sharp-ca', false]);
  t.same(id.dns, ['s1', 's1.lab.example']);
  t.same(id.ips, ['10.9.0.2', 'FD00:0:0:0:0:0:0:2'], 'IPs as node:crypto prints them');
  t.same(id.extKeyUsage.sort(), [EKU_SERVER_AUTH, EKU_CLIENT_AUTH].sort());
  t.equal(new X509Certificate(readFileSync(n.cert)).publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const ca = caFiles(dir).cert;
  t.ok(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslserver', n.cert), 'openssl verify: a TLS server of the CA');
  t.ok(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslclient', n.cert), 'openssl verify: a TLS client of the CA');
  t.ok(opensslOk('x509', '-in', n.cert, '-noout', '-checkhost', 's1'), 'openssl: the certificate names host s1');
  t.match(execFileSync('openssl', ['x509', '-in', n.cert, '-noout', '-checkip', '10.9.0.2'], { encoding: 'utf8' }), /does match/);
});

t.test('a controller: clientAuth only, CN = its name', async (t) => {
  const c = await createControllerCert(dir, 'ctl1');
  t.same([c.cert, c.key], [controllerFiles(dir, 'ctl1').cert, controllerFiles(dir, 'ctl1').key]);
  t.equal(mode(c.key), 0o600);
  t.same([c.identity.name, c.identity.role, c.identity.dns, c.identity.ips, c.identity.extKeyUsage], ['ctl1', 'controller', [], [], [EKU_CLIENT_AUTH]]);
  const ca = caFiles(dir).cert;
  t.ok(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslclient', c.cert), 'a TLS client');
  t.notOk(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslserver', c.cert), 'not a TLS server');
});

t.test('a P4Runtime switch: serverAuth only, OU=switch, CN and SAN DNS = its name, plus its address', async (t) => {
  const c = await createSwitchCert(dir, 's2', { ips: ['10.9.0.5'] });
  t.same([c.kind, c.cert, c.key], ['switch', switchFiles(dir, 's2').cert, switchFiles(dir, 's2').key]);
  t.equal(mode(c.key), 0o600);
  t.same([c.identity.name, c.identity.role, c.identity.dns, c.identity.ips, c.identity.extKeyUsage], ['s2', 'switch', ['s2'], ['10.9.0.5'], [EKU_SERVER_AUTH]]);
  const ca = caFiles(dir).cert;
  t.ok(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslserver', c.cert), 'a TLS server of the CA');
  t.notOk(opensslOk('verify', '-CAfile', ca, '-purpose', 'sslclient', c.cert), 'not a TLS client: a switch calls no one');
  t.match(execFileSync('openssl', ['x509', '-in', c.cert, '-noout', '-checkip', '10.9.0.5'], { encoding: 'utf8' }), /does match/);
  t.equal(loadTls({ ca, ...switchFiles(dir, 's2') }, 'server').identity.role, 'switch');
  t.throws(() => loadTls({ ca, ...switchFiles(dir, 's2') }, 'client'), { name: 'CertificateFileError', message: /switch 's2' .* is not for client use \(it lacks clientAuth\)/ });
});

t.test('nothing is overwritten without force; force replaces', async (t) => {
  const before = readFileSync(nodeFiles(dir, 's1').cert);
  const keyBefore = readFileSync(nodeFiles(dir, 's1').key);
  await t.rejects(createNodeCert(dir, 's1'), { name: 'CertExistsError', message: /node-s1\.crt, .*node-s1\.key already exist: refusing to overwrite/ });
  await t.rejects(createCa(dir), CertExistsError);
  await t.rejects(createControllerCert(dir, 'ctl1'), CertExistsError);
  t.same(readFileSync(nodeFiles(dir, 's1').cert), before, 'certificate unchanged');
  t.same(readFileSync(nodeFiles(dir, 's1').key), keyBefore, 'key unchanged');
  const n = await createNodeCert(dir, 's1', { force: true, ips: ['10.9.0.4'] });
  t.not(n.identity.fingerprint256, identityOf(before).fingerprint256, 'replaced');
  t.same(n.identity.ips, ['10.9.0.4']);
  t.equal(mode(n.key), 0o600);
  t.notOk(readdirSync(dir).some((f) => f.startsWith('.certs-')), 'no scratch folders left');
});

t.test('bad names, addresses and validity are refused before anything is written', async (t) => {
  const listing = readdirSync(dir).sort();
  for (const name of ['bad name', '-s1', 's1-', 'a_b', 'x/y', '', 'a'.repeat(64)]) await t.rejects(createNodeCert(dir, name), CertsUsageError, `node name '${name}'`);
  await t.rejects(createControllerCert(dir, 'ctl 1'), CertsUsageError);
  await t.rejects(createNodeCert(dir, 's9', { ips: ['300.1.1.1'] }), { name: 'CertsUsageError', message: /not an IP address: '300\.1\.1\.1'/ });
  await t.rejects(createNodeCert(dir, 's9', { dns: ['under_score'] }), CertsUsageError);
  await t.rejects(createNodeCert(dir, 's9', { days: 0 }), CertsUsageError);
  await t.rejects(createCa(path.join(tmp, 'other'), { name: 'a/b' }), CertsUsageError);
  t.same(readdirSync(dir).sort(), listing, 'nothing new in the folder');
  t.notOk(existsSync(path.join(tmp, 'other')));
});

t.test('a leaf needs a CA', async (t) => {
  await t.rejects(createControllerCert(path.join(tmp, 'empty'), 'ctl1'), CaMissingError);
});

t.test('showCert: identity, key, and the CA check', async (t) => {
  const r = showCert(nodeFiles(dir, 's1').cert);
  t.equal(r.ca, caFiles(dir).cert, 'ca.crt beside it');
  t.equal(r.verified, true);
  t.equal(r.current, true);
  t.equal(r.publicKey, 'EC prime256v1');
  t.equal(r.mode, '0644');
  const other = path.join(tmp, 'other-ca');
  await createCa(other, { name: 'other-ca' });
  t.equal(showCert(nodeFiles(dir, 's1').cert, caFiles(other).cert).verified, false, 'not issued by another CA');
});

t.test('keys stay 0600 and certificates 0644 whatever the umask', async (t) => {
  const d = path.join(tmp, 'umask');
  const old = process.umask(0o077);
  try {
    await createCa(d);
  } finally {
    process.umask(old);
  }
  t.equal(mode(caFiles(d).key), 0o600);
  t.equal(mode(caFiles(d).cert), 0o644);
  const old2 = process.umask(0);
  try {
    await createControllerCert(d, 'c1');
  } finally {
    process.umask(old2);
  }
  t.equal(mode(controllerFiles(d, 'c1').key), 0o600);
  t.equal(mode(controllerFiles(d, 'c1').cert), 0o644);
});
