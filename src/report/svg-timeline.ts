/**
 * An SVG timeline: one-way latency of every (sampled) probe over time, on a
 * log scale, with the handovers' phases shaded behind it.
 */

export interface TimelinePhase {
  /** ms since the start of the timeline */
  start: number;
  end: number;
  kind: 'marking' | 'draining' | 'moving-state' | 'releasing' | 'rolling-back';
  label?: string;
}

export interface TimelineInput {
  title: string;
  /** [ms since start, latency µs] */
  points: readonly (readonly [number, number])[];
  phases: readonly TimelinePhase[];
  width?: number;
  height?: number;
}

const COLORS: Record<TimelinePhase['kind'], string> = {
  marking: '#fde68a',
  draining: '#fdba74',
  'moving-state': '#fca5a5',
  releasing: '#a7f3d0',
  'rolling-back': '#c4b5fd',
};

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function svgTimeline(input: TimelineInput): string {
  const W = input.width ?? 1000;
  const H = input.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 70 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const tMax = Math.max(1, ...input.points.map((p) => p[0]), ...input.phases.map((p) => p.end));
  const lats = input.points.map((p) => Math.max(1, p[1]));
  const yMinExp = Math.floor(Math.log10(Math.max(1, Math.min(...lats, 10))));
  const yMaxExp = Math.ceil(Math.log10(Math.max(10, ...lats)));
  const x = (t: number): number => m.l + (t / tMax) * pw;
  const y = (us: number): number => m.t + ph - ((Math.log10(Math.max(1, us)) - yMinExp) / Math.max(1, yMaxExp - yMinExp)) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${esc(input.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(input.title)}</text>`);
  for (const p of input.phases) {
    const x0 = x(p.start);
    const w = Math.max(1, x(p.end) - x0);
    out.push(`<rect x="${x0.toFixed(1)}" y="${m.t}" width="${w.toFixed(1)}" height="${ph}" fill="${COLORS[p.kind]}" opacity="0.7"><title>${esc(p.label ?? p.kind)}</title></rect>`);
  }
  // axes and grid
  out.push(`<line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}" stroke="#333"/>`);
  out.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}" stroke="#333"/>`);
  for (let e = yMinExp; e <= yMaxExp; e++) {
    const yy = y(10 ** e);
    const label = 10 ** e >= 1000 ? `${10 ** (e - 3)} ms` : `${10 ** e} µs`;
    out.push(`<line x1="${m.l}" y1="${yy.toFixed(1)}" x2="${m.l + pw}" y2="${yy.toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${m.l - 6}" y="${(yy + 4).toFixed(1)}" text-anchor="end">${label}</text>`);
  }
  const step = 10 ** Math.floor(Math.log10(tMax / 5)) * (tMax / 10 ** Math.floor(Math.log10(tMax / 5)) > 25 ? 5 : 1);
  for (let t = 0; t <= tMax; t += step) {
    out.push(`<text x="${x(t).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${t >= 1000 ? `${(t / 1000).toFixed(t % 1000 === 0 ? 0 : 1)} s` : `${t} ms`}</text>`);
  }
  out.push(`<text x="${m.l + pw / 2}" y="${H - 32}" text-anchor="middle">time</text>`);
  out.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">one-way latency (log)</text>`);
  // points
  const dots = input.points.map((p) => `M${x(p[0]).toFixed(1)} ${y(p[1]).toFixed(1)}h1`).join('');
  out.push(`<path d="${dots}" stroke="#1d4ed8" stroke-width="2" stroke-linecap="round" fill="none"/>`);
  // legend
  let lx = m.l;
  for (const [kind, color] of Object.entries(COLORS)) {
    out.push(`<rect x="${lx}" y="${H - 18}" width="12" height="12" fill="${color}"/>`);
    out.push(`<text x="${lx + 16}" y="${H - 8}">${kind}</text>`);
    lx += 30 + kind.length * 7;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
