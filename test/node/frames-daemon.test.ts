// A real node process serves its framed channel beside its gRPC socket:
// its ready line names it, the socket is 0600, and `sharpctl node status`
// says its calls went there; a node started with listen.frames: false
// offers none, and status says its calls went over gRPC and why.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNodeProcess, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { validateNodeConfig } from '../../src/node/config.js';
import { createVeth } from '../../src/net/iproute.js';
import { testNetns } from '../helpers/netns.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { stopAndDetachNodes } from '../helpers/node-procs.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

/** A node process that only reads a P4 switch's port (no BPF of its own), in a namespace of its own; stopped and removed on teardown. */
async function startNode(t: Test, dir: string, frames: boolean): Promise<{ sock: string; ready: NodeProcess['ready'] }> {
  const swNs = testNetns(t, 'frd');
  createVeth({ name: 'a0', netns: swNs }, { name: 'b0', netns: swNs });
  const name = uniqueName('frd');
  const sock = path.join(dir, `${name}.sock`);
  const raw = { name, listen: { unix: sock, ...(frames ? {} : { frames: false }) }, stateDir: path.join(dir, `state-${name}`), p4Switches: [{ name: 's2', netns: swNs, ports: [{ name: 's2-vnf1', ifname: 'b0' }] }] };
  const configFile = path.join(dir, `${name}.json`);
  writeFileSync(configFile, JSON.stringify(raw));
  const node: LabNode = { role: 'p4reader', netns: testNetns(t, 'frdn'), config: validateNodeConfig(raw), configFile };
  const proc = await startNodeProcess(node, { cli }).catch(async (e: unknown) => {
    await stopAndDetachNodes([], [node], cli);
    throw e;
  });
  t.teardown(() => stopAndDetachNodes([proc], [node], cli));
  return { sock, ready: proc.ready };
}

t.test('a node serves its framed channel beside its socket; node status says the calls went there', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-frd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { sock, ready } = await startNode(t, dir, true);
  t.same(ready.frames, { unix: `${sock}.frames`, tcpPort: null }, 'the ready line names the framed socket');
  t.equal(statSync(`${sock}.frames`).mode & 0o777, 0o600, 'the framed socket is 0600');
  const text = execFileSync(process.execPath, [cli, 'node', 'status', '--socket', sock], { encoding: 'utf8' });
  t.match(text, new RegExp(`calls: framed channel \\(unix:${sock.replace(/[.]/g, '\\.')}\\.frames\\)`));
  const json = JSON.parse(execFileSync(process.execPath, [cli, 'node', 'status', '--socket', sock, '--json'], { encoding: 'utf8' })) as { transport: { calls: string }; health: { frames?: { unix?: string } } };
  t.equal(json.transport.calls, 'frames');
  t.equal(json.health.frames?.unix, `${sock}.frames`);
});

t.test('listen.frames: false: no framed channel; node status says the calls went over gRPC and why', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-frd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { sock, ready } = await startNode(t, dir, false);
  t.equal(ready.frames, null, 'the ready line names none');
  t.throws(() => statSync(`${sock}.frames`), 'no framed socket');
  const text = execFileSync(process.execPath, [cli, 'node', 'status', '--socket', sock], { encoding: 'utf8' });
  t.match(text, /calls: gRPC \(node \S+ offers no framed channel\)/);
});
