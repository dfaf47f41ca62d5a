// The committed P4 artifacts belong to the committed P4 sources.
import t from 'tap';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/env.js';

const p4 = (f: string): string => path.join(repoRoot, f);

t.test('p4/build/sources.sha256 matches the P4 sources (rebuild with make p4 after changing them)', async (t) => {
  const lines = readFileSync(p4('p4/build/sources.sha256'), 'utf8').trim().split('\n');
  t.ok(lines.length >= 2, 'every P4 source is listed');
  for (const line of lines) {
    const [hash, file] = line.split(/\s+/);
    const now = createHash('sha256').update(readFileSync(p4(file!))).digest('hex');
    t.equal(now, hash, `${file}: the artifacts were built from this version`);
  }
});

t.test('the BMv2 JSON and the P4Info describe the SHarP switch', async (t) => {
  const json = JSON.parse(readFileSync(p4('p4/build/sharp.json'), 'utf8')) as { pipelines: { tables: { name: string }[] }[] };
  const tables = json.pipelines.flatMap((p) => p.tables.map((x) => x.name));
  for (const name of ['SharpIngress.rules_exact', 'SharpIngress.rules_wild', 'SharpIngress.rule_actions']) t.ok(tables.includes(name), `BMv2 JSON has ${name}`);
  const info = readFileSync(p4('p4/build/sharp.p4info.txtpb'), 'utf8');
  for (const name of ['SharpIngress.rules_exact', 'SharpIngress.rules_wild', 'SharpIngress.port_info']) t.match(info, `name: "${name}"`, `P4Info has ${name}`);
  const infoJson = JSON.parse(readFileSync(p4('p4/build/sharp.p4info.json'), 'utf8')) as { tables: { preamble: { name: string } }[]; counters: { preamble: { name: string } }[] };
  t.same(
    infoJson.tables.map((x) => x.preamble.name).sort(),
    [...info.matchAll(/tables \{\n  preamble \{\n    id: \d+\n    name: "([^"]+)"/g)].map((m) => m[1]).sort(),
    'the JSON P4Info has the same tables as the text one',
  );
  t.ok(infoJson.counters.some((c) => c.preamble.name === 'SharpEgress.packet_out_tx'), 'the JSON P4Info has the packet-out counter');
});

let p4c = true;
try {
  execFileSync('p4c', ['--version'], { stdio: 'ignore' });
} catch {
  p4c = false;
}
t.test('p4c compiles p4/sharp.p4 to the committed P4Info', { skip: p4c ? false : 'p4c is not installed (it is in no registry this project uses; see README)' }, async (t) => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  execFileSync('p4c', ['--target', 'bmv2', '--arch', 'v1model', '--p4runtime-files', `${path.join(out, 'sharp.p4info.txtpb')},${path.join(out, 'sharp.p4info.json')}`, '-o', out, p4('p4/sharp.p4')], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.equal(readFileSync(path.join(out, 'sharp.p4info.txtpb'), 'utf8'), readFileSync(p4('p4/build/sharp.p4info.txtpb'), 'utf8'), 'same P4Info as committed');
  t.equal(readFileSync(path.join(out, 'sharp.p4info.json'), 'utf8'), readFileSync(p4('p4/build/sharp.p4info.json'), 'utf8'), 'same P4Info (JSON) as committed');
});
