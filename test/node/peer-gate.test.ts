// The gate of a node that trusts two CAs: its controllers' and its state
// peers'. A listed peer's certificate must come from the peers' CA, every
// other certificate from the controllers' CA, so neither CA can vouch for
// the other's clients. In-process servers on loopback, real mutual TLS.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { controllerTlsFiles, createCa, createControllerCert, createNodeCert, loadTls, nodeChannel, nodeTlsFiles, startNodeServer, tlsEndpoint, type NodeServer, type TlsMaterial } from '../../src/node/transport/index.js';
import { check, healthService, HealthClient } from './fixtures/health.js';

const ctlCaDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-gate-ctl-'));
const peerCaDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-gate-peer-'));
const servers: NodeServer[] = [];
const clients: grpc.Client[] = [];
t.teardown(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.close(200)));
  rmSync(ctlCaDir, { recursive: true, force: true });
  rmSync(peerCaDir, { recursive: true, force: true });
});

await createCa(ctlCaDir, { name: 'controllers-ca' });
await createCa(peerCaDir, { name: 'peers-ca' });
await createNodeCert(ctlCaDir, 'vnfa', { ips: ['127.0.0.1'] });
await createControllerCert(ctlCaDir, 'ctl1');
await createNodeCert(peerCaDir, 'vnfb');
await createNodeCert(peerCaDir, 'vnfc');
await createControllerCert(peerCaDir, 'ctl1'); // the peers' CA minting a controller
await createNodeCert(ctlCaDir, 'vnfb'); // the controllers' CA minting a peer

const own = loadTls(nodeTlsFiles(ctlCaDir, 'vnfa'), 'server');
const peersCa = loadTls(nodeTlsFiles(peerCaDir, 'vnfb'), 'client').ca;
const server = await startNodeServer({
  node: 'vnfa',
  services: [healthService(() => undefined)],
  tcp: { address: '127.0.0.1:0', tls: { ...own, ca: Buffer.concat([own.ca, Buffer.from('\n'), peersCa]) } },
  allowControllers: ['ctl1'],
  allowNodes: { names: ['vnfb'], methods: ['/sharpt.health.v1.Health/Check'], ca: new X509Certificate(peersCa) },
  controllersCa: new X509Certificate(own.ca),
});
servers.push(server);

/** a client presenting `m`'s certificate, trusting the controllers' CA for the server */
const as = (m: TlsMaterial): HealthClient => {
  const c = nodeChannel(tlsEndpoint('vnfa', server.tcpAddress!, { ...m, ca: own.ca })).client(HealthClient);
  clients.push(c);
  return c;
};
const outcome = async (c: HealthClient): Promise<string> => {
  try {
    return (await check(c)).peer;
  } catch (e) {
    return `${grpc.status[(e as grpc.ServiceError).code]}: ${(e as grpc.ServiceError).details}`;
  }
};

t.test('each CA vouches for its own clients only', async (t) => {
  t.equal(await outcome(as(loadTls(controllerTlsFiles(ctlCaDir, 'ctl1'), 'client'))), 'ctl1', 'the controller from the controllers\' CA');
  t.equal(await outcome(as(loadTls(nodeTlsFiles(peerCaDir, 'vnfb'), 'client'))), 'vnfb', 'the listed peer from the peers\' CA');
  t.match(await outcome(as(loadTls(controllerTlsFiles(peerCaDir, 'ctl1'), 'client'))), /^PERMISSION_DENIED: node vnfa does not accept controller 'ctl1' \(issued by 'peers-ca'.*not issued by its controllers' CA 'controllers-ca'/, "a controller named ctl1 from the peers' CA is refused");
  t.match(await outcome(as(loadTls(nodeTlsFiles(ctlCaDir, 'vnfb'), 'client'))), /^PERMISSION_DENIED: node vnfa does not accept node 'vnfb' \(issued by 'controllers-ca'.*not issued by its peers' CA 'peers-ca'/, "a peer named vnfb from the controllers' CA is refused");
  t.match(await outcome(as(loadTls(nodeTlsFiles(peerCaDir, 'vnfc'), 'client'))), /^PERMISSION_DENIED: node vnfa does not accept node 'vnfc' .*not on its peers\.allow/, 'a node of the peers\' CA that is not listed is refused');
});
