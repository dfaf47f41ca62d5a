/**
 * sharpctl certs: the certificates of the node control API (mutual TLS).
 *   certs init <dir>                       a CA: ca.crt, ca.key
 *   certs node <name> --ip … --dns …       node-<name>.crt/.key (server + client)
 *   certs controller <name>                controller-<name>.crt/.key (client)
 *   certs switch <name> --ip … --dns …     switch-<name>.crt/.key (a P4Runtime server: simple_switch_grpc --grpc-server-ssl)
 *   certs show <file>                      who a certificate names, checked against ca.crt
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { CertReport, IssuedCert } from '../node/transport/index.js';
import { DEFAULT_CA_DAYS, DEFAULT_CA_NAME, DEFAULT_LEAF_DAYS } from '../node/transport/cert-defaults.js';

/** the transport (certificates, and gRPC through its errors), loaded only by the command that runs */
type Transport = typeof import('../node/transport/index.js');
const transport = (): Promise<Transport> => import('../node/transport/index.js');

const DEFAULT_DIR = 'certs';

/** An error main.ts maps to its exit code by name (UsageError: 2, EnvironmentError: 3). */
function named(name: 'UsageError' | 'EnvironmentError', e: Error): Error {
  const n = new Error(e.message, { cause: e });
  n.name = name;
  return n;
}

function mapped(t: Transport, e: unknown): unknown {
  if (e instanceof t.CertsUsageError || e instanceof t.CaMissingError || e instanceof t.CertificateFileError) return named('UsageError', e);
  if (e instanceof t.OpensslMissingError) return named('EnvironmentError', e);
  return e;
}

function days(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 36500) throw named('UsageError', new Error(`--days must be an integer from 1 to 36500, got '${v}'`));
  return n;
}

/** repeatable and comma-separated: --ip 10.9.0.2 --ip fd00::2,10.9.1.2 */
const collect = (v: string, prev: string[]): string[] => [...prev, ...v.split(',').map((s) => s.trim()).filter((s) => s !== '')];

/** --ip and --dns of a server's certificate (its SAN) */
const sanIp = (who: string): Option => new Option('--ip <addr>', `an IP address the ${who} is reached at (repeatable, or comma-separated)`).argParser(collect).default([]);
const sanDns = (who: string): Option => new Option('--dns <name>', `a further DNS name of the ${who} (repeatable, or comma-separated)`).argParser(collect).default([]);

const mode = (file: string): string => `0${(statSync(file).mode & 0o777).toString(8)}`;

function printIssued(c: IssuedCert): void {
  const id = c.identity;
  const role = c.kind === 'ca' ? 'CA' : c.kind;
  console.log(`${role} '${c.name}'${id.dns.length + id.ips.length > 0 ? ` (SAN ${[...id.dns.map((d) => `DNS:${d}`), ...id.ips.map((i) => `IP:${i}`)].join(', ')})` : ''}, valid until ${id.validTo.toISOString().slice(0, 10)}`);
  console.log(`  ${mode(c.cert)}  ${c.cert}`);
  console.log(`  ${mode(c.key)}  ${c.key}`);
  console.log(`  SHA-256 ${id.fingerprint256}`);
}

function printReport(r: CertReport): void {
  const id = r.identity;
  const eku = id.extKeyUsage.map((o) => ({ '1.3.6.1.5.5.7.3.1': 'serverAuth', '1.3.6.1.5.5.7.3.2': 'clientAuth' })[o] ?? o);
  const rows: [string, string][] = [
    ['file', `${r.file} (${r.mode})`],
    ['name (CN)', id.name || '(none)'],
    ['role (OU)', id.role],
    ['subject', id.subject.replace(/\n/g, ', ')],
    ['issuer', id.issuerDn.replace(/\n/g, ', ')],
    ['SAN', [...id.dns.map((d) => `DNS:${d}`), ...id.ips.map((i) => `IP:${i}`)].join(', ') || '(none)'],
    ['usage', id.isCa ? 'CA' : eku.join(', ') || '(any)'],
    ['key', r.publicKey],
    ['valid', `${id.validFrom.toISOString()} to ${id.validTo.toISOString()}${r.current ? '' : '  — NOT VALID NOW'}`],
    ['serial', id.serial],
    ['SHA-256', id.fingerprint256],
    ['CA check', r.ca === undefined ? 'no CA given (--ca) and no ca.crt beside it' : `${r.verified ? 'issued by' : 'NOT issued by'} ${r.ca}`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
}

interface IssueFlags {
  days: number;
  force?: boolean;
  json?: boolean;
}

const out = (json: boolean | undefined, value: unknown, human: () => void): void => {
  if (json) console.log(JSON.stringify(value, null, 2));
  else human();
};

export function addCertsCommands(program: Command): void {
  const certs = program
    .command('certs')
    .description('make and inspect the certificates of the node control API and of P4Runtime switches (mutual TLS; openssl, EC P-256)')
    .addHelpText(
      'after',
      `
Files (one folder per deployment; keys 0600, folder 0700):
  ca.crt ca.key                       the CA every node and controller trusts
  node-<name>.crt node-<name>.key     a node: serverAuth + clientAuth, CN=<name>, SAN DNS:<name> [+ --dns, --ip]
  controller-<name>.crt/.key          a controller: clientAuth, CN=<name>
  switch-<name>.crt switch-<name>.key a P4Runtime switch: serverAuth, CN=<name>, SAN DNS:<name> [+ --dns, --ip]

Examples:
  sharpctl certs init /etc/sharp/certs
  sharpctl certs node s1 --dir /etc/sharp/certs --ip 10.9.0.2
  sharpctl certs controller ctl1 --dir /etc/sharp/certs
  sharpctl certs switch s2 --dir /etc/sharp/certs --ip 10.9.0.5
  sharpctl certs show /etc/sharp/certs/node-s1.crt`,
    );

  /** --days, --force, --json; the action's result printed (JSON or human), errors mapped to exit codes */
  const issuing = <A>(cmd: Command, defaultDays: number, force: string, issue: (t: Transport, arg: string, o: A & IssueFlags) => Promise<IssuedCert>): Command =>
    cmd
      .option('--days <n>', 'validity in days', days, defaultDays)
      .option('--force', force)
      .option('--json', 'print the result as JSON')
      .action(async (arg: string, o: A & IssueFlags) => {
        const t = await transport();
        const c = await issue(t, arg, o).catch((e: unknown) => Promise.reject(mapped(t, e)));
        out(o.json, c, () => printIssued(c));
      });

  issuing<{ name: string }>(
    certs
      .command('init')
      .description('create a CA (key and self-signed certificate) in a folder')
      .argument('<dir>', 'folder for the certificates (created 0700)')
      .option('--name <cn>', 'CN of the CA', DEFAULT_CA_NAME)
      .addHelpText('after', '\nExamples:\n  sharpctl certs init certs\n  sharpctl certs init /etc/sharp/certs --name lab-ca --days 365 --json'),
    DEFAULT_CA_DAYS,
    'replace an existing CA (every certificate it signed stops being trusted)',
    (t, dir, o) => t.createCa(dir, { name: o.name, days: o.days, force: o.force === true }),
  );

  /** a server's certificate (node, switch): --dir, and --ip / --dns for its SAN */
  const server = (kind: 'node' | 'switch', description: string, argument: string, help: string, create: (t: Transport) => Transport['createNodeCert']): Command =>
    issuing<{ dir: string; ip: string[]; dns: string[] }>(
      certs
        .command(kind)
        .description(description)
        .argument('<name>', argument)
        .option('--dir <dir>', 'folder with the CA', DEFAULT_DIR)
        .addOption(sanIp(kind))
        .addOption(sanDns(kind))
        .addHelpText('after', help),
      DEFAULT_LEAF_DAYS,
      `replace an existing certificate of this ${kind}`,
      (t, name, o) => create(t)(o.dir, name, { ips: o.ip, dns: o.dns, days: o.days, force: o.force === true }),
    );

  server(
    'node',
    "create a node's certificate and key, signed by the CA (serverAuth + clientAuth; CN and SAN DNS = the node's name)",
    "the node's name (the controller checks the node's certificate against it)",
    '\nExamples:\n  sharpctl certs node s1 --ip 10.9.0.2\n  sharpctl certs node vnf1 --dir /etc/sharp/certs --ip 10.9.0.3,fd00::3 --dns vnf1.lab.example --json',
    (t) => t.createNodeCert,
  );

  issuing<{ dir: string }>(
    certs
      .command('controller')
      .description("create a controller's certificate and key, signed by the CA (clientAuth; CN = the controller's name)")
      .argument('<name>', "the controller's name (what nodes' allow-lists name)")
      .option('--dir <dir>', 'folder with the CA', DEFAULT_DIR)
      .addHelpText('after', '\nExamples:\n  sharpctl certs controller ctl1\n  sharpctl certs controller ctl1 --dir /etc/sharp/certs --days 90 --json'),
    DEFAULT_LEAF_DAYS,
    'replace an existing certificate of this controller',
    (t, name, o) => t.createControllerCert(o.dir, name, { days: o.days, force: o.force === true }),
  );

  server(
    'switch',
    "create a P4Runtime switch's server certificate and key, signed by the CA (serverAuth; CN and SAN DNS = the switch's name)",
    "the switch's name in the deployment spec (the controller checks the switch's certificate against it)",
    `
Give the files to simple_switch_grpc (the controller's certificate, controller-<name>.crt, is its client certificate):
  simple_switch_grpc … -- --grpc-server-addr 10.9.0.5:9559 --grpc-server-ssl --grpc-server-with-client-auth \\
    --grpc-server-cacert certs/ca.crt --grpc-server-cert certs/switch-s2.crt --grpc-server-key certs/switch-s2.key

Examples:
  sharpctl certs switch s2 --ip 10.9.0.5
  sharpctl certs switch s2 --dir /etc/sharp/certs --ip 10.9.0.5 --dns s2.lab.example --json`,
    (t) => t.createSwitchCert,
  );

  certs
    .command('show')
    .description('print who a certificate names (CN, role, SAN, issuer, validity, fingerprint) and check it against the CA')
    .argument('<file>', 'a PEM certificate')
    .option('--ca <file>', 'the CA to check it against (default: ca.crt beside it)')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl certs show certs/node-s1.crt\n  sharpctl certs show /tmp/peer.pem --ca certs/ca.crt --json')
    .action(async (file: string, o: { ca?: string; json?: boolean }) => {
      const t = await transport();
      let r: CertReport;
      try {
        r = t.showCert(path.resolve(file), o.ca === undefined ? undefined : path.resolve(o.ca));
      } catch (e) {
        throw mapped(t, e);
      }
      out(o.json, r, () => printReport(r));
      if (r.verified === false || !r.current) process.exitCode = 1;
    });
}
