/** A scrape of GET /metrics from a server on a Unix socket (a node's, the lab daemon's). */
import http from 'node:http';

/** The scrape failed: no server (`code`: ENOENT, ECONNREFUSED, EACCES, …), a timeout, or an answer other than 200. */
export class MetricsScrapeError extends Error {
  override name = 'MetricsScrapeError';
  constructor(
    readonly socketPath: string,
    detail: string,
    readonly code: string | undefined,
    options?: ErrorOptions,
  ) {
    super(`metrics on ${socketPath}: ${detail}`, options);
  }
}

export function scrapeUnixSocket(socketPath: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/metrics', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('error', (e) => reject(new MetricsScrapeError(socketPath, e.message, undefined, { cause: e })));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new MetricsScrapeError(socketPath, `HTTP ${res.statusCode}: ${body.trim().slice(0, 200)}`, undefined))));
    });
    req.on('timeout', () => req.destroy(new MetricsScrapeError(socketPath, `no answer within ${timeoutMs} ms`, 'ETIMEDOUT')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof MetricsScrapeError ? e : new MetricsScrapeError(socketPath, e.message, e.code, { cause: e })));
  });
}
