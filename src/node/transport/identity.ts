/**
 * Identities: who a certificate names. Certificates made by certs.ts carry
 * the role in the subject's OU ("node", "controller", "ca") and the name in
 * its CN; a node's (and a P4Runtime switch's) certificate also names itself
 * in its SAN (DNS:<name>, plus any further DNS names and IP addresses).
 */
import { X509Certificate } from 'node:crypto';

export type Role = 'node' | 'controller' | 'switch' | 'ca' | 'unknown';

export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** What a certificate says about its holder. */
export interface CertIdentity {
  /** the subject's CN ('' when it has none) */
  name: string;
  role: Role;
  /** DNS names of the SAN */
  dns: string[];
  /** IP addresses of the SAN */
  ips: string[];
  /** the issuer's CN ('' when it has none) */
  issuer: string;
  /** the full subject and issuer, one "K=V" per line (as node:crypto prints them) */
  subject: string;
  issuerDn: string;
  serial: string;
  /** SHA-256 fingerprint, colon-separated hex */
  fingerprint256: string;
  validFrom: Date;
  validTo: Date;
  isCa: boolean;
  /** extended key usages (OIDs) */
  extKeyUsage: string[];
}

/** The fields of a distinguished name as node:crypto prints it ("O=x\nOU=y\nCN=z"). */
export function dnFields(dn: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of dn.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0 && !m.has(line.slice(0, i))) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

function san(x: X509Certificate): { dns: string[]; ips: string[] } {
  const dns: string[] = [];
  const ips: string[] = [];
  for (const part of (x.subjectAltName ?? '').split(/,\s*/)) {
    if (part.startsWith('DNS:')) dns.push(part.slice(4));
    else if (part.startsWith('IP Address:')) ips.push(part.slice(11));
  }
  return { dns, ips };
}

const ROLES: readonly Role[] = ['node', 'controller', 'switch', 'ca'];

export function identityOf(cert: X509Certificate | Buffer | string): CertIdentity {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  const subject = dnFields(x.subject);
  const ou = subject.get('OU') ?? '';
  const { dns, ips } = san(x);
  return {
    name: subject.get('CN') ?? '',
    role: (ROLES as readonly string[]).includes(ou) ? (ou as Role) : 'unknown',
    dns,
    ips,
    issuer: dnFields(x.issuer).get('CN') ?? '',
    subject: x.subject,
    issuerDn: x.issuer,
    serial: x.serialNumber,
    fingerprint256: x.fingerprint256,
    validFrom: new Date(x.validFrom),
    validTo: new Date(x.validTo),
    isCa: x.ca,
    extKeyUsage: x.keyUsage ?? [],
  };
}

/** "controller 'ctl1' (issued by 'sharp-ca', SHA-256 AB:CD:EF:01…)" */
export function describeIdentity(id: CertIdentity): string {
  const who = id.name === '' ? `a certificate without CN (subject ${id.subject.replace(/\n/g, ', ') || 'empty'})` : `${id.role === 'unknown' ? 'certificate' : id.role} '${id.name}'`;
  return `${who} (issued by '${id.issuer || id.issuerDn.replace(/\n/g, ', ')}', SHA-256 ${id.fingerprint256.slice(0, 11)}…)`;
}

/** Every name a server certificate answers to: its SAN DNS names and IPs, else its CN. */
export function serverNames(id: CertIdentity): string[] {
  const names = [...id.dns, ...id.ips];
  return names.length > 0 ? names : id.name === '' ? [] : [id.name];
}
