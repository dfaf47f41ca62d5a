// The controller-buffer baseline on node processes (issue 12: the
// baseline's controller channel is one more piece that may live on another
// host): the switches' nodes stream the diverted frames up to the
// controller (DivertedFrames), which buffers them during the state move and
// sends them back down (SendFromController) to the new instance. The
// buffer is what SHarP saves: > 0 here, 0 for a SHarP handover in the same
// lab. Bad requests on this path are refused by field, changing nothing.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { openNodeLab } from '../../src/lab/lab-nodes.js';
import { installRules, standardSpec } from '../../src/lab/netns-lab.js';
import { HandoverEngine, flowMoved } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { twoWayProbes } from '../helpers/handovers.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const PPS = 500;
const STATE_DELAY_MS = 100;

t.test('controller-buffer handovers on node processes: frames up to the controller and back down, in order, none lost; SHarP in the same lab buffers nothing', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-nbase-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nl = await openNodeLab(standardSpec({ ringCapacity: 8192 }), `${uniqueName('nb')}-`, { dir: path.join(dir, 'nodes'), cli });
  t.teardown(() => nl.close());
  await installRules(nl.dp, nl.lab.spec.rules);
  const rules = nl.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-vnf1' || r.action.outPort === 's2-vnf1')
    .map((r) => r.id);
  const engine = new HandoverEngine(nl.dp, { mover: new DelayedStateMover(new VnfMapStateMover(), STATE_DELAY_MS) });
  const probes = twoWayProbes(t, nl.lab, { objectsDir, flows: 2, stamps: true });
  probes.start(PPS);
  await sleep(300);
  const before = await nl.dp.controllerDataPackets();
  const baseline = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2 * PPS, mode: 'controller-buffer' });
  const after = await nl.dp.controllerDataPackets();
  await sleep(100);
  const sharp = await engine.handover({ rules, from: flowMoved(baseline) ? 'vnf2' : 'vnf1', to: flowMoved(baseline) ? 'vnf1' : 'vnf2', expectedPps: 2 * PPS });
  await sleep(100);
  const reports = await probes.stop();

  t.equal(baseline.outcome, 'completed', `baseline: ${baseline.reason ?? 'completed'}`);
  t.ok(baseline.controllerBuffer.peakPackets > 0, `the controller buffered ${baseline.controllerBuffer.peakPackets} frames (${baseline.controllerBuffer.peakBytes} bytes) at its peak`);
  t.equal(after.packets - before.packets, BigInt(baseline.controllerBuffer.packets), `the switches' nodes diverted ${after.packets - before.packets} frames; the controller received every one of them`);
  t.equal(sharp.outcome, 'completed', `SHarP: ${sharp.reason ?? 'completed'}`);
  t.equal(sharp.controllerBuffer.peakPackets, 0, 'SHarP buffers nothing at the controller');
  for (const [name, rep] of [
    ['client→server', reports[0]!],
    ['server→client', reports[1]!],
  ] as const) {
    t.ok(rep.sent > 0, `${name}: ${rep.sent} probes`);
    t.same({ lost: rep.lost, reordered: rep.reordered, duplicated: rep.duplicated, stampMismatches: rep.stampMismatches }, { lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `${name}: nothing lost, reordered or duplicated through the controller and back`);
  }

  // the path's requests, checked on the node
  const s1 = nl.dp.deployment.nodes.find((n) => n.switches().includes('s1'))!;
  await t.rejects(s1.sendFromController('s1', 's1-vnf2', [Buffer.alloc(10)]), { code: grpc.status.INVALID_ARGUMENT, message: /frames\.0: 10 bytes; a frame is 14 to 9216 bytes/ }, 'a runt frame is refused by its index');
  await t.rejects(s1.sendFromController('s1', 's1-nowhere', [Buffer.alloc(64)]), { code: grpc.status.NOT_FOUND, message: /switch s1 has no port 's1-nowhere'/ });
  const one = s1.openDivertedFrames(() => undefined);
  await one.drain();
  const errors: Error[] = [];
  const two = s1.openDivertedFrames(() => undefined, (e) => errors.push(e));
  await t.rejects(two.drain(), { message: /already open on this node/ }, 'a second stream is refused: a ring has one reader');
  one.close();
  two.close();
});
