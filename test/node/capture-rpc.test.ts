// The node's Capture rpc over a real gRPC Unix socket, in front of a real
// switch object driven by BPF_PROG_TEST_RUN: frames stream back with their
// verdicts and wall-clock stamps, the count ends the stream with final
// counts, and bad requests are gRPC statuses naming the field and limit
// (INVALID_ARGUMENT), an unknown port (NOT_FOUND), a second capture at once
// (FAILED_PRECONDITION). Also: sharpctl capture on a BMv2 lab says it is not supported.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NODE_API, NODE_SERVICE } from '../../src/node/api.js';
import { nodeHandlers } from '../../src/node/service.js';
import { NodeCapture, type CaptureProgress, type NodeCapturedFrame } from '../../src/node/capture-service.js';
import { NodeClient, NodeCallError } from '../../src/node/client.js';
import { nodeChannel, startNodeServer, unixEndpoint } from '../../src/node/transport/index.js';
import type { CaptureRequest } from '../../src/capture/filter.js';
import { loadCaptureSwitch } from '../helpers/capture.js';
import { probeFrame } from '../helpers/programs.js';
import { runSync } from '../helpers/cli.js';

t.test('Capture over the node API', async (t) => {
  const { target, run } = loadCaptureSwitch(t);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-caprpc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const capture = new NodeCapture('capnode', () => [target]);
  const health = () => ({ node: 'capnode', api: NODE_API, version: 'test', pid: process.pid, startedAt: Date.now(), adopted: false, quiescenceMs: 1, switches: [], instances: [] }); // no switch control here: Health only, and Capture
  const server = await startNodeServer({ node: 'capnode', services: [{ definition: NODE_SERVICE, implementation: nodeHandlers({ health, capture }) }], unix: { path: path.join(dir, 'node.sock') } });
  t.teardown(() => server.close(0));
  const client = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(path.join(dir, 'node.sock'), 'capnode')) });
  t.teardown(() => client.close());
  const base: CaptureRequest = { snaplen: 256, count: 0, durationMs: 0 };

  await t.test('frames stream back until the count, then the final counts', async (t) => {
    const frames: NodeCapturedFrame[] = [];
    const counts: CaptureProgress[] = [];
    let sent = false;
    const before = BigInt(Date.now()) * 1_000_000n;
    await client.capture(
      { ...base, count: 3 },
      {
        onFrames: (fs) => frames.push(...fs),
        onCounts: (c) => {
          counts.push(c);
          // the first counts say the hook is on: now the frames
          if (!sent) {
            sent = true;
            for (let seq = 1n; seq <= 5n; seq++) run(probeFrame({ seq }));
          }
        },
      },
    );
    t.equal(frames.length, 3, 'exactly the count');
    t.same(frames.map((f) => [f.object, f.port, f.direction, f.verdict, f.handoverId, f.ruleId]), Array(3).fill(['sw', 'sw-vnf1', 'out', 'marked-pre', 7, 1]));
    t.same(frames.map((f) => f.data.readBigUInt64BE(42 + 4 + 8)), [1n, 2n, 3n], 'in decision order, shim and all');
    t.ok(frames.every((f) => f.tsUnixNs >= before && f.tsUnixNs <= BigInt(Date.now()) * 1_000_000n), 'stamps in wall-clock time');
    t.equal(counts.at(-1)?.final, true, 'the last message: final counts');
    t.equal(counts.at(-1)?.ringFull, 0n);
  });

  await t.test('bad requests: gRPC statuses that name the field and the limit', async (t) => {
    const refused = async (r: CaptureRequest): Promise<NodeCallError> => {
      try {
        await client.capture(r, { onFrames: () => undefined, onCounts: () => undefined });
      } catch (e) {
        if (e instanceof NodeCallError) return e;
        throw e;
      }
      throw new Error('not refused');
    };
    const snap = await refused({ ...base, snaplen: 0 });
    t.equal(snap.code, grpc.status.INVALID_ARGUMENT);
    t.match(snap.message, /snaplen 0 out of range 1\.\.1540/);
    const hid = await refused({ ...base, handover: 20000 });
    t.equal(hid.code, grpc.status.INVALID_ARGUMENT);
    t.match(hid.message, /handover 20000 out of range 1\.\.16383/);
    const flow = await refused({ ...base, flow: { src: '300.1.1.1' } });
    t.match(flow.message, /flow\.src '300\.1\.1\.1' is not an IPv4 address/);
    const port = await refused({ ...base, port: 'nope' });
    t.equal(port.code, grpc.status.NOT_FOUND);
    t.match(port.message, /node capnode has no port or interface 'nope' \(has: sw-client, sw-vnf1\)/);
  });

  await t.test('one capture at a time', async (t) => {
    const stop = new AbortController();
    let on!: () => void;
    const first = client.capture(base, { onFrames: () => undefined, onCounts: () => on(), signal: stop.signal });
    await new Promise<void>((r) => (on = r));
    try {
      await client.capture(base, { onFrames: () => undefined, onCounts: () => undefined });
      t.fail('a second capture was accepted');
    } catch (e) {
      t.equal((e as NodeCallError).code, grpc.status.FAILED_PRECONDITION);
      t.match((e as Error).message, /a capture is running on node capnode already/);
    }
    stop.abort();
    await first;
  });
});

t.test('sharpctl capture on a BMv2 lab with no node processes (its agents in its own process): not supported, with the reason', async (t) => {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-capbmv2-'));
  t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
  mkdirSync(path.join(runDir, 'zb'));
  // a lab state that names this test process as its (living) daemon, target bmv2
  const { processStartTime } = await import('../../src/lab/run-dir.js');
  writeFileSync(path.join(runDir, 'zb', 'state.json'), JSON.stringify({ name: 'zb', pid: process.pid, pidStart: processStartTime(process.pid), prefix: 'sharp-zb-', status: 'ready', startedAt: new Date().toISOString(), socket: path.join(runDir, 'zb', 'ctl.sock'), namespaces: [], target: 'bmv2' }));
  const r = runSync(['capture', '--lab', 'zb', '-w', path.join(runDir, 'x.pcapng')], { env: { SHARPCTL_RUN_DIR: runDir } });
  t.equal(r.code, 3, `exit 3 (${r.stderr})`);
  t.match(r.stderr, /capture is not supported on bmv2 switches: .*no node to capture at/);
});
