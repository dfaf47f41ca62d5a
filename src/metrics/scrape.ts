/** A scrape of GET /metrics from a server on a Unix socket (sharpctl lab metrics). */
import http from 'node:http';

/** The scrape failed: no server (its cause's code: ENOENT, ECONNREFUSED, EACCES), a timeout, or an answer other than 200. */
export class MetricsScrapeError extends Error {
  override name = 'MetricsScrapeError';
  constructor(
    message: string,
    readonly socketPath: string,
    readonly code: string | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export function scrapeUnixSocket(socketPath: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/metrics', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('error', (e) => reject(new MetricsScrapeError(`scraping ${socketPath}: ${e.message}`, socketPath, undefined, { cause: e })));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new MetricsScrapeError(`scraping ${socketPath}: HTTP ${res.statusCode}: ${body.trim().slice(0, 200)}`, socketPath, undefined))));
    });
    req.on('timeout', () => req.destroy(new MetricsScrapeError(`scraping ${socketPath}: no answer within ${timeoutMs} ms`, socketPath, 'ETIMEDOUT')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof MetricsScrapeError ? e : new MetricsScrapeError(`cannot reach the metrics at ${socketPath}: ${e.message}`, socketPath, e.code, { cause: e })));
  });
}
