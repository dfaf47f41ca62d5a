// A node's E-State staging store (stateStore.estate), three members on Unix
// sockets: what the old instance's node stages, the new one's obtains from
// whichever member holds it, and a member that is down costs nothing when
// the one that staged the records answers; a record no member that
// answered has is an error naming the members that did not answer. Discard forgets a handover's
// records, and only that handover's.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NodeEStateStore } from '../../src/state/estate-stage.js';
import type { FlowKey } from '../../src/dataplane/types.js';

const flow = (sport: number): FlowKey => ({ src: '10.0.0.1', dst: '10.0.0.2', sport, dport: 9000, proto: 17 });

t.test('stage at the old node, obtain at the new one, discard; a member that does not answer is named only when a record is missing', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-estage-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const at = (n: string): string => `unix:${path.join(dir, `${n}.sock`)}`;
  const members = (self: string): { node: string; address: string }[] => ['a', 'b', 'dead'].filter((n) => n !== self).map((node) => ({ node, address: at(node) }));
  const a = await NodeEStateStore.start({ id: 'a', group: 'g', listen: at('a'), members: members('a'), timeoutMs: 200 });
  const b = await NodeEStateStore.start({ id: 'b', group: 'g', listen: at('b'), members: members('b'), timeoutMs: 200 });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  t.equal(a.describe(), b.describe(), 'one group: two nodes meet there');

  await a.stage('vnf1', 7, [
    { flow: flow(1), value: Buffer.from([1, 2]) },
    { flow: flow(2), value: Buffer.from([3]) },
  ]);
  await a.stage('vnf1', 8, [{ flow: flow(1), value: Buffer.from([9]) }]);
  const got = await b.obtain('vnf1', 7, [flow(1), flow(2)]);
  t.same(
    got.found.map((e) => [e.flow.sport, [...e.value]]),
    [
      [1, [1, 2]],
      [2, [3]],
    ],
    'the records of handover 7 from the member that staged them, byte for byte (the dead member does not matter: every record is in)',
  );
  t.same(got.missing, []);
  await t.rejects(b.obtain('vnf1', 7, [flow(1), flow(3)]), { message: /1 of the 2 records vnf1 staged are not at any member that answered; not reached: dead \(/ }, 'a record no member that answered has: the dead member might hold it, and is named');

  t.equal(await a.discard('vnf1', 7, 'all'), 2, "the old node forgets handover 7's two records");
  t.same((await b.obtain('vnf1', 8, [flow(1)])).found.map((e) => [...e.value]), [[9]], "handover 8's record is still there");

  await a.close();
  await t.rejects(b.obtain('vnf1', 8, [flow(1)]), { message: /1 of the 1 records vnf1 staged are not at any member that answered; not reached: .*a \(/ }, 'the member that held them is down: named');
});
