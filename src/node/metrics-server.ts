/**
 * Where a node serves its metrics (GET /metrics): HTTPS with mutual TLS on
 * TCP, with the node's own certificate and CA (a scraper needs a client
 * certificate the node's CA issued, and, with `allow`, one of those names),
 * or plain HTTP on a Unix socket (mode 0600). Never plain HTTP on a network
 * socket: the config refuses metrics.tcp without tls.
 */
import http from 'node:http';
import https from 'node:https';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { identityOf, type TlsMaterial } from './transport/index.js';
import { EXPOSITION_CONTENT_TYPE } from '../metrics/exposition.js';

export class MetricsServerError extends Error {
  override name = 'MetricsServerError';
}

export interface MetricsServerOptions {
  unix?: string;
  tcp?: { address: string; tls: TlsMaterial; allow?: readonly string[] };
  /** the exposition, built at each scrape */
  render(): string;
  log?: (line: string) => void;
}

export interface MetricsServer {
  readonly unixPath: string | undefined;
  /** host:port actually bound (port 0 resolved) */
  readonly tcpAddress: string | undefined;
  close(): Promise<void>;
}

function splitAddress(a: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(a);
  if (m === null) throw new MetricsServerError(`metrics.tcp '${a}' is not host:port`);
  const port = Number(m[3]);
  if (port > 65535) throw new MetricsServerError(`metrics.tcp '${a}': port out of range`);
  return { host: m[1] ?? m[2]!, port };
}

function listen(server: http.Server, arg: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(arg, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const log = o.log ?? (() => undefined);
  const handler =
    (authorize: (req: http.IncomingMessage) => string | undefined) =>
    (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const refused = authorize(req);
      if (refused !== undefined) {
        log(`metrics: refused a scrape: ${refused}`);
        res.writeHead(403, { 'content-type': 'text/plain' }).end(`${refused}\n`);
        return;
      }
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (url !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are at /metrics\n');
        return;
      }
      let body: string;
      try {
        body = o.render();
      } catch (e) {
        log(`metrics: a scrape failed: ${e instanceof Error ? e.message : String(e)}`);
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e instanceof Error ? e.message : String(e)}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
  const servers: http.Server[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(
      servers.map(
        (s) =>
          new Promise<void>((r) => {
            s.close(() => r());
            s.closeAllConnections();
          }),
      ),
    );
    if (o.unix !== undefined) rmSync(o.unix, { force: true });
  };
  let unixPath: string | undefined;
  let tcpAddress: string | undefined;
  try {
    if (o.unix !== undefined) {
      mkdirSync(path.dirname(o.unix), { recursive: true, mode: 0o700 });
      rmSync(o.unix, { force: true });
      const s = http.createServer(handler(() => undefined));
      servers.push(s);
      await listen(s, { path: o.unix });
      chmodSync(o.unix, 0o600);
      unixPath = o.unix;
    }
    if (o.tcp !== undefined) {
      const { host, port } = splitAddress(o.tcp.address);
      const allow = o.tcp.allow;
      const s = https.createServer(
        { ca: o.tcp.tls.ca, cert: o.tcp.tls.cert, key: o.tcp.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
        handler((req) => {
          const sock = req.socket as TLSSocket;
          if (!sock.authorized) return `client certificate not accepted (${String(sock.authorizationError)})`;
          if (allow === undefined) return undefined;
          const raw = sock.getPeerCertificate().raw;
          const name = identityOf(new X509Certificate(raw)).name;
          return allow.includes(name) ? undefined : `'${name}' is not on metrics.allow (${allow.join(', ')})`;
        }),
      );
      s.on('tlsClientError', (e) => log(`metrics: TLS handshake refused: ${e.message}`));
      servers.push(s);
      await listen(s, { host, port });
      const a = s.address();
      tcpAddress = typeof a === 'object' && a !== null ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : o.tcp.address;
    }
  } catch (e) {
    await closeAll();
    throw e instanceof MetricsServerError ? e : new MetricsServerError(`cannot serve metrics: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return { unixPath, tcpAddress, close: closeAll };
}
