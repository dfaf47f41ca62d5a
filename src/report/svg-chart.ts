/** A small SVG line chart: numeric x (linear or log), one line per series, legend. */

export interface ChartSeries {
  name: string;
  points: readonly (readonly [number, number])[];
  /** optional [low, high] spread per point, drawn as a bar */
  spread?: readonly (readonly [number, number])[];
}

export interface ChartInput {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly ChartSeries[];
  xLog?: boolean;
  yLog?: boolean;
  width?: number;
  height?: number;
}

const PALETTE = ['#1d4ed8', '#dc2626', '#059669', '#d97706', '#7c3aed'];
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (v: number): string => (Math.abs(v) >= 1e6 ? `${+(v / 1e6).toPrecision(3)}M` : Math.abs(v) >= 1e3 ? `${+(v / 1e3).toPrecision(3)}k` : `${+v.toPrecision(3)}`);

export function svgChart(c: ChartInput): string {
  const W = c.width ?? 720;
  const H = c.height ?? 420;
  const m = { l: 80, r: 20, t: 40, b: 80 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = c.series.flatMap((s) => [...s.points.map((p) => p[1]), ...(s.spread ?? []).map((p) => p[1])]);
  const tx = (v: number): number => (c.xLog ? Math.log10(Math.max(v, 1e-9)) : v);
  const ty = (v: number): number => (c.yLog ? Math.log10(Math.max(v, 1)) : v);
  const xMin = Math.min(...xs.map(tx), c.xLog ? Infinity : 0);
  const xMax = Math.max(...xs.map(tx), xMin + 1e-9);
  const yMin = c.yLog ? 0 : 0;
  const yMax = Math.max(...ys.map(ty), yMin + 1);
  const X = (v: number): number => m.l + ((tx(v) - xMin) / (xMax - xMin || 1)) * pw;
  const Y = (v: number): number => m.t + ph - ((ty(v) - yMin) / (yMax - yMin || 1)) * ph;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<title>${esc(c.title)}</title>`);
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(c.title)}</text>`);
  o.push(`<line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}" stroke="#333"/>`);
  o.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}" stroke="#333"/>`);
  for (let i = 0; i <= 5; i++) {
    const yv = yMin + ((yMax - yMin) * i) / 5;
    const yy = m.t + ph - (ph * i) / 5;
    o.push(`<line x1="${m.l}" y1="${yy.toFixed(1)}" x2="${m.l + pw}" y2="${yy.toFixed(1)}" stroke="#eee"/>`);
    o.push(`<text x="${m.l - 6}" y="${(yy + 4).toFixed(1)}" text-anchor="end">${fmt(c.yLog ? 10 ** yv : yv)}</text>`);
  }
  // x labels at the measured points, skipping those that would overlap the previous one
  let lastLabel = -Infinity;
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    if (X(x) - lastLabel < 34) continue;
    lastLabel = X(x);
    o.push(`<text x="${X(x).toFixed(1)}" y="${m.t + ph + 16}" text-anchor="middle">${fmt(x)}</text>`);
  }
  o.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  o.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const col = PALETTE[i % PALETTE.length]!;
    const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)} ${Y(p[1]).toFixed(1)}`).join(' ');
    if (d) o.push(`<path d="${d}" stroke="${col}" stroke-width="2" fill="none"/>`);
    s.points.forEach((p, j) => {
      o.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${col}"><title>${esc(`${s.name}: ${fmt(p[0])} → ${fmt(p[1])}`)}</title></circle>`);
      const sp = s.spread?.[j];
      if (sp) o.push(`<line x1="${X(p[0]).toFixed(1)}" y1="${Y(sp[0]).toFixed(1)}" x2="${X(p[0]).toFixed(1)}" y2="${Y(sp[1]).toFixed(1)}" stroke="${col}" stroke-width="1"/>`);
    });
    o.push(`<rect x="${m.l + i * 170}" y="${H - 22}" width="12" height="12" fill="${col}"/>`);
    o.push(`<text x="${m.l + i * 170 + 16}" y="${H - 12}">${esc(s.name)}</text>`);
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}
