/**
 * The Prometheus text exposition format (version 0.0.4): families written
 * in order with their HELP and TYPE once, and fixed-bucket histograms. No
 * data-plane imports: the controller (lab daemon, deploy) writes it too.
 */
export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;
export type Value = number | bigint;

/** Escapes a label value: backslash, double quote, newline. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(l: Labels): string {
  const keys = Object.keys(l);
  return keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(l[k]!)}"`).join(',')}}`;
}

function valueText(v: Value): string {
  if (typeof v === 'bigint') return v.toString();
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Builds one exposition: families in order, each HELP and TYPE once. */
export class Exposition {
  readonly #lines: string[] = [];
  readonly #families = new Set<string>();

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    if (this.#families.has(name)) return this;
    this.#families.add(name);
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, labels: Labels, value: Value): this {
    this.#lines.push(`${name}${labelText(labels)} ${valueText(value)}`);
    return this;
  }

  /** A counter family with its samples. */
  counter(name: string, help: string, samples: readonly (readonly [Labels, Value])[]): this {
    this.family(name, 'counter', help);
    for (const [l, v] of samples) this.sample(name, l, v);
    return this;
  }

  gauge(name: string, help: string, samples: readonly (readonly [Labels, Value])[]): this {
    this.family(name, 'gauge', help);
    for (const [l, v] of samples) this.sample(name, l, v);
    return this;
  }

  text(): string {
    return this.#lines.join('\n') + '\n';
  }
}

/** Seconds; Prometheus' default buckets start at 5 ms, a node call takes tens of µs to a few ms (Release: up to seconds). */
export const API_LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A histogram with fixed label names, observed in seconds. */
export class Histogram {
  readonly #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = API_LATENCY_BUCKETS,
  ) {
    if (buckets.some((b, i) => i > 0 && b <= buckets[i - 1]!)) throw new RangeError(`histogram ${name}: buckets must increase`);
  }

  observe(labels: Labels, seconds: number): void {
    const key = JSON.stringify(Object.entries(labels).sort());
    let s = this.#series.get(key);
    if (s === undefined) {
      s = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) s.counts[i]!++;
    s.sum += seconds;
    s.count++;
  }

  write(e: Exposition): void {
    e.family(this.name, 'histogram', this.help);
    for (const s of this.#series.values()) {
      this.buckets.forEach((b, i) => e.sample(`${this.name}_bucket`, { ...s.labels, le: String(b) }, s.counts[i]!));
      e.sample(`${this.name}_bucket`, { ...s.labels, le: '+Inf' }, s.count);
      e.sample(`${this.name}_sum`, s.labels, s.sum);
      e.sample(`${this.name}_count`, s.labels, s.count);
    }
  }
}


/** A counter with fixed label names, kept in the process (reset when it restarts; Prometheus' rate() allows for that). */
export class Counter {
  readonly #series = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {
    if (!name.endsWith('_total')) throw new RangeError(`counter ${name}: a counter's name ends in _total`);
  }

  /** Adds `by` (default 1) to the series; a series once seen is written from then on, at 0 if never incremented. */
  inc(labels: Labels, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw new RangeError(`counter ${this.name}: cannot add ${by} (a counter only grows)`);
    const key = JSON.stringify(Object.entries(labels).sort());
    const s = this.#series.get(key);
    if (s === undefined) this.#series.set(key, { labels: { ...labels }, value: by });
    else s.value += by;
  }

  write(e: Exposition): void {
    e.counter(
      this.name,
      this.help,
      [...this.#series.values()].map((s) => [s.labels, s.value] as const),
    );
  }
}
