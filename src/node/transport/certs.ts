/**
 * Certificates for the node control API: one CA per deployment, a leaf per
 * node (server and client: the node serves the controller and talks to
 * other nodes) and per controller (client only). Made with the openssl CLI
 * (execFile, never a shell), EC P-256 keys, into one folder:
 *
 *   ca.crt ca.key
 *   node-<name>.crt node-<name>.key              CN=<name>, OU=node, SAN DNS:<name> [+ --dns, --ip]
 *   controller-<name>.crt controller-<name>.key  CN=<name>, OU=controller
 *   switch-<name>.crt switch-<name>.key          CN=<name>, OU=switch, serverAuth only, SAN DNS:<name> [+ --dns, --ip]
 *                                                (a P4Runtime server: simple_switch_grpc --grpc-server-ssl)
 *
 * Keys are written 0600, certificates 0644, the folder is created 0700.
 * Nothing is overwritten unless `force` is given; a file appears complete
 * or not at all (written aside, then linked / renamed into place).
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { CaMissingError, CertExistsError, CertificateFileError, CertsUsageError, OpensslError, OpensslMissingError } from './errors.js';
import { EKU_CLIENT_AUTH, EKU_SERVER_AUTH, identityOf, type CertIdentity } from './identity.js';

export type CertKind = 'ca' | 'node' | 'controller' | 'switch';

export interface CertFiles {
  cert: string;
  key: string;
}

import { DEFAULT_CA_NAME, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS } from './cert-defaults.js';
export { DEFAULT_CA_NAME, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS };

export const caFiles = (dir: string): CertFiles => ({ cert: path.join(dir, 'ca.crt'), key: path.join(dir, 'ca.key') });
export const nodeFiles = (dir: string, name: string): CertFiles => ({ cert: path.join(dir, `node-${name}.crt`), key: path.join(dir, `node-${name}.key`) });
export const controllerFiles = (dir: string, name: string): CertFiles => ({ cert: path.join(dir, `controller-${name}.crt`), key: path.join(dir, `controller-${name}.key`) });
export const switchFiles = (dir: string, name: string): CertFiles => ({ cert: path.join(dir, `switch-${name}.crt`), key: path.join(dir, `switch-${name}.key`) });
const leafFiles = { node: nodeFiles, controller: controllerFiles, switch: switchFiles } as const;

/** A certificate the tooling made. */
export interface IssuedCert {
  kind: CertKind;
  name: string;
  cert: string;
  key: string;
  identity: CertIdentity;
}

export interface CaOptions {
  /** CN of the CA (default 'sharp-ca') */
  name?: string;
  /** validity in days (default 3650) */
  days?: number;
  /** replace existing files */
  force?: boolean;
}

export interface LeafOptions {
  /** validity in days (default 825) */
  days?: number;
  force?: boolean;
}

export interface NodeCertOptions extends LeafOptions {
  /** IP addresses the node is reached at (SAN IP) */
  ips?: readonly string[];
  /** further DNS names of the node (SAN DNS; its name is always one) */
  dns?: readonly string[];
}

// ---------------------------------------------------------------- validation

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DNS_NAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
const CA_NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;

/** A node or controller name: a DNS name (it goes into the SAN and into file names). */
export function checkName(what: string, name: string): string {
  if (name.length > 253 || !DNS_NAME.test(name)) throw new CertsUsageError(`${what} name must be a DNS name (letters, digits, '-', dot-separated labels of at most 63), got '${name}'`);
  return name;
}

function checkDays(days: number): number {
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw new CertsUsageError(`validity must be an integer number of days from 1 to 36500, got ${days}`);
  return days;
}

function checkIp(ip: string): string {
  if (isIP(ip) === 0) throw new CertsUsageError(`not an IP address: '${ip}'`);
  return ip;
}

// ---------------------------------------------------------------- openssl

/** Runs openssl with these arguments (no shell); resolves with its standard output. */
export function openssl(args: readonly string[], timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { encoding: 'buffer', timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err === null) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new OpensslMissingError({ cause: err }));
      const code = typeof err.code === 'number' ? err.code : null;
      reject(new OpensslError(args, code, stderr.toString('utf8'), { cause: err }));
    });
  });
}

const P256 = ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-pkeyopt', 'ec_param_enc:named_curve'];

interface Subject {
  role: CertKind;
  cn: string;
}

function config(subject: Subject, ext: Record<string, string>): string {
  return [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    'utf8 = yes',
    '[dn]',
    'O = sharpctl',
    `OU = ${subject.role}`,
    `CN = ${subject.cn}`,
    '[ext]',
    ...Object.entries(ext).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
}

/** A random positive 128-bit serial number (RFC 5280: at most 20 octets, positive). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return `0x${b.toString('hex')}`;
}

// ---------------------------------------------------------------- writing

function refuseExisting(files: readonly string[], force: boolean | undefined): void {
  if (force) return;
  const present = files.filter((f) => existsSync(f));
  if (present.length > 0) throw new CertExistsError(present);
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Moves `tmp` to `dest`: replacing it when `force`, else failing (EEXIST) if it appeared meanwhile. */
function install(tmp: string, dest: string, force: boolean | undefined): void {
  if (force) return renameSync(tmp, dest);
  try {
    linkSync(tmp, dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new CertExistsError([dest]);
    throw e;
  }
  unlinkSync(tmp);
}

/** A private scratch folder inside `dir` (same file system: files are renamed into place). */
async function withScratch<T>(dir: string, f: (scratch: string) => Promise<T>): Promise<T> {
  const scratch = mkdtempSync(path.join(dir, '.certs-'));
  try {
    return await f(scratch);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function newKey(scratch: string): Promise<string> {
  const pem = await openssl(P256);
  const file = path.join(scratch, 'key.pem');
  writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
  return file;
}

/** `req -new -newkey`: a fresh P-256 key, unencrypted */
const NEW_P256_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-pkeyopt', 'ec_param_enc:named_curve', '-nodes'];

/** undefined until tried: whether `openssl req -x509 -CA` works (OpenSSL 3.0 and later) */
let reqSignsWithCa: boolean | undefined;

/**
 * A new key and its certificate signed by the CA. With OpenSSL 3 one call
 * (req -x509 -CA) does both: about 10 ms instead of three processes; older
 * versions take the three (genpkey, req, x509 -req).
 */
async function signedLeaf(scratch: string, cfg: string, ca: Ca, days: number): Promise<{ key: string; pem: Buffer }> {
  const sign = ['-CA', ca.files.cert, '-CAkey', ca.files.key, '-set_serial', serial(), '-sha256', '-days', String(days)];
  if (reqSignsWithCa !== false) {
    const key = path.join(scratch, 'key.pem');
    try {
      const pem = await openssl(['req', '-x509', '-new', ...NEW_P256_KEY, '-keyout', key, '-config', cfg, '-extensions', 'ext', ...sign]);
      chmodSync(key, 0o600);
      reqSignsWithCa = true;
      return { key, pem };
    } catch (e) {
      if (reqSignsWithCa === true || !(e instanceof OpensslError) || !/unknown option|unrecognized option/i.test(e.stderr)) throw e;
      reqSignsWithCa = false;
      rmSync(key, { force: true });
    }
  }
  const key = await newKey(scratch);
  const csr = path.join(scratch, 'req.csr');
  writeFileSync(csr, await openssl(['req', '-new', '-key', key, '-config', cfg]));
  return { key, pem: await openssl(['x509', '-req', '-in', csr, ...sign, '-extfile', cfg, '-extensions', 'ext']) };
}

function writeCert(scratch: string, pem: Buffer): string {
  const file = path.join(scratch, 'cert.pem');
  writeFileSync(file, pem, { mode: 0o644, flag: 'wx' });
  chmodSync(file, 0o644); // whatever the umask
  return file;
}

// ---------------------------------------------------------------- CA

/** Creates a CA: ca.key and the self-signed ca.crt in `dir` (made 0700 if missing). */
export async function createCa(dir: string, o: CaOptions = {}): Promise<IssuedCert> {
  const name = o.name ?? DEFAULT_CA_NAME;
  if (!CA_NAME.test(name)) throw new CertsUsageError(`CA name must be 1-64 letters, digits, spaces, '.', '_' or '-', got '${name}'`);
  const days = checkDays(o.days ?? DEFAULT_CA_DAYS);
  const files = caFiles(dir);
  refuseExisting([files.cert, files.key], o.force);
  ensureDir(dir);
  await withScratch(dir, async (scratch) => {
    const cfg = path.join(scratch, 'openssl.cnf');
    writeFileSync(
      cfg,
      config({ role: 'ca', cn: name }, { basicConstraints: 'critical,CA:TRUE,pathlen:0', keyUsage: 'critical,keyCertSign,cRLSign', subjectKeyIdentifier: 'hash' }),
    );
    // one openssl call makes the key and signs the certificate
    const key = path.join(scratch, 'key.pem');
    const pem = await openssl(['req', '-x509', '-new', ...NEW_P256_KEY, '-keyout', key, '-config', cfg, '-extensions', 'ext', '-sha256', '-days', String(days), '-set_serial', serial()]);
    chmodSync(key, 0o600);
    const cert = writeCert(scratch, pem);
    refuseExisting([files.cert, files.key], o.force);
    install(key, files.key, o.force);
    install(cert, files.cert, o.force);
  });
  return { kind: 'ca', name, ...files, identity: identityOf(readFileSync(files.cert)) };
}

interface Ca {
  files: CertFiles;
  cert: X509Certificate;
}

function loadCa(dir: string): Ca {
  const files = caFiles(dir);
  if (!existsSync(files.cert) || !existsSync(files.key)) throw new CaMissingError(dir);
  const cert = parseCert(files.cert);
  if (!cert.ca) throw new CertificateFileError(files.cert, `${files.cert} is not a CA certificate`);
  checkKeyPair(files.cert, cert, files.key);
  return { files, cert };
}

// ---------------------------------------------------------------- leaves

async function issueLeaf(dir: string, kind: Exclude<CertKind, 'ca'>, name: string, ext: Record<string, string>, o: LeafOptions): Promise<IssuedCert> {
  const days = checkDays(o.days ?? DEFAULT_LEAF_DAYS);
  const files = leafFiles[kind](dir, name);
  refuseExisting([files.cert, files.key], o.force);
  const ca = loadCa(dir);
  await withScratch(dir, async (scratch) => {
    const cfg = path.join(scratch, 'openssl.cnf');
    writeFileSync(cfg, config({ role: kind, cn: name }, { ...ext, subjectKeyIdentifier: 'hash', authorityKeyIdentifier: 'keyid' }));
    const { key, pem } = await signedLeaf(scratch, cfg, ca, days);
    const leaf = new X509Certificate(pem);
    if (!leaf.verify(ca.cert.publicKey)) throw new CertificateFileError(files.cert, `openssl made a certificate for ${kind} '${name}' that ${ca.files.cert} does not verify`);
    const cert = writeCert(scratch, pem);
    refuseExisting([files.cert, files.key], o.force);
    install(key, files.key, o.force);
    install(cert, files.cert, o.force);
  });
  return { kind, name, ...files, identity: identityOf(readFileSync(files.cert)) };
}

/**
 * A node's certificate, signed by the CA in `dir`: CN=<name>, OU=node,
 * serverAuth + clientAuth, SAN DNS:<name> plus the given DNS names and IPs.
 */
export async function createNodeCert(dir: string, name: string, o: NodeCertOptions = {}): Promise<IssuedCert> {
  return issueServer(dir, 'node', name, 'serverAuth,clientAuth', o);
}

/**
 * A P4Runtime switch's server certificate, signed by the CA in `dir`:
 * CN=<name>, OU=switch, serverAuth only (a switch calls no one), SAN
 * DNS:<name> plus the given DNS names and IPs — its address among them
 * when clients check it by address.
 */
export async function createSwitchCert(dir: string, name: string, o: NodeCertOptions = {}): Promise<IssuedCert> {
  return issueServer(dir, 'switch', name, 'serverAuth', o);
}

/** A server's leaf: SAN DNS:<name> plus the given DNS names and IPs. */
function issueServer(dir: string, kind: 'node' | 'switch', name: string, eku: string, o: NodeCertOptions): Promise<IssuedCert> {
  checkName(kind, name);
  const dns = [...new Set([name, ...(o.dns ?? []).map((d) => checkName('DNS', d))])];
  const ips = [...new Set((o.ips ?? []).map(checkIp))];
  const san = [...dns.map((d) => `DNS:${d}`), ...ips.map((i) => `IP:${i}`)].join(',');
  return issueLeaf(dir, kind, name, { basicConstraints: 'critical,CA:FALSE', keyUsage: 'critical,digitalSignature', extendedKeyUsage: eku, subjectAltName: san }, o);
}

/** A controller's certificate, signed by the CA in `dir`: CN=<name>, OU=controller, clientAuth only. */
export async function createControllerCert(dir: string, name: string, o: LeafOptions = {}): Promise<IssuedCert> {
  checkName('controller', name);
  return issueLeaf(dir, 'controller', name, { basicConstraints: 'critical,CA:FALSE', keyUsage: 'critical,digitalSignature', extendedKeyUsage: 'clientAuth' }, o);
}

// ---------------------------------------------------------------- reading

export function parseCert(file: string): X509Certificate {
  let text: Buffer;
  try {
    text = readFileSync(file);
  } catch (e) {
    throw new CertificateFileError(file, `cannot read certificate ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return new X509Certificate(text);
  } catch (e) {
    throw new CertificateFileError(file, `${file} is not a PEM certificate: ${(e as Error).message}`, { cause: e });
  }
}

function checkKeyPair(certFile: string, cert: X509Certificate, keyFile: string): Buffer {
  let key: Buffer;
  try {
    key = readFileSync(keyFile);
  } catch (e) {
    throw new CertificateFileError(keyFile, `cannot read key ${keyFile}: ${(e as Error).message}`, { cause: e });
  }
  let ok: boolean;
  try {
    ok = cert.checkPrivateKey(createPrivateKey(key));
  } catch (e) {
    throw new CertificateFileError(keyFile, `${keyFile} is not a PEM private key: ${(e as Error).message}`, { cause: e });
  }
  if (!ok) throw new CertificateFileError(keyFile, `${keyFile} is not the key of ${certFile}`);
  return key;
}

/** PEM material for one end of a TLS connection. */
export interface TlsMaterial {
  /** the CA certificate(s) the peer must be signed by */
  ca: Buffer;
  /** this end's certificate */
  cert: Buffer;
  /** this end's private key */
  key: Buffer;
  /** who `cert` names */
  identity: CertIdentity;
}

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * Reads a CA, a certificate and its key, and checks them before any
 * connection is made: the key is the certificate's, the certificate is
 * issued by the CA, it is valid now and fit for `use` (its extended key
 * usages). Errors name the file and the identity.
 */
export function loadTls(files: TlsFiles, use: 'server' | 'client'): TlsMaterial {
  const caCert = parseCert(files.ca);
  const cert = parseCert(files.cert);
  const key = checkKeyPair(files.cert, cert, files.key);
  const id = identityOf(cert);
  const who = `${id.role === 'unknown' ? 'certificate' : id.role} '${id.name}' (${files.cert})`;
  if (!caCert.ca) throw new CertificateFileError(files.ca, `${files.ca} is not a CA certificate`);
  if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) throw new CertificateFileError(files.cert, `${who} was not issued by ${files.ca} ('${identityOf(caCert).name}'); it names issuer '${id.issuer}'`);
  const now = Date.now();
  if (now < id.validFrom.getTime() || now > id.validTo.getTime()) throw new CertificateFileError(files.cert, `${who} is not valid now (valid ${id.validFrom.toISOString()} to ${id.validTo.toISOString()})`);
  const eku = use === 'server' ? EKU_SERVER_AUTH : EKU_CLIENT_AUTH;
  if (id.extKeyUsage.length > 0 && !id.extKeyUsage.includes(eku)) throw new CertificateFileError(files.cert, `${who} is not for ${use} use (it lacks ${use}Auth)`);
  return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key, identity: id };
}

/** The files of node `name` in a certificate folder: ca.crt, node-<name>.crt/.key. */
export const nodeTlsFiles = (dir: string, name: string): TlsFiles => ({ ca: caFiles(dir).cert, ...nodeFiles(dir, name) });
/** The files of controller `name` in a certificate folder: ca.crt, controller-<name>.crt/.key. */
export const controllerTlsFiles = (dir: string, name: string): TlsFiles => ({ ca: caFiles(dir).cert, ...controllerFiles(dir, name) });

/** What `sharpctl certs show` prints. */
export interface CertReport {
  file: string;
  identity: CertIdentity;
  /** "EC prime256v1", "RSA 2048", … */
  publicKey: string;
  /** the CA checked against, when one was found */
  ca: string | undefined;
  /** true when `ca` issued (and signed) it */
  verified: boolean | undefined;
  /** valid now */
  current: boolean;
  /** mode of the file, e.g. "0644" */
  mode: string;
}

/** Describes a certificate; checks it against `ca` (default: ca.crt beside it, when present). */
export function showCert(file: string, ca?: string): CertReport {
  const cert = parseCert(file);
  const identity = identityOf(cert);
  const k = cert.publicKey.asymmetricKeyDetails;
  const publicKey = `${cert.publicKey.asymmetricKeyType?.toUpperCase() ?? 'unknown'}${k?.namedCurve ? ` ${k.namedCurve}` : k?.modulusLength ? ` ${k.modulusLength}` : ''}`;
  const caFile = ca ?? (existsSync(path.join(path.dirname(file), 'ca.crt')) ? path.join(path.dirname(file), 'ca.crt') : undefined);
  let verified: boolean | undefined;
  if (caFile !== undefined) {
    const c = parseCert(caFile);
    verified = cert.checkIssued(c) && cert.verify(c.publicKey);
  }
  const now = Date.now();
  return {
    file,
    identity,
    publicKey,
    ca: caFile,
    verified,
    current: now >= identity.validFrom.getTime() && now <= identity.validTo.getTime(),
    mode: `0${(statSync(file).mode & 0o777).toString(8)}`,
  };
}
