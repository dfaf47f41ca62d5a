// A thousand concurrent TCP connections through the NAT pair
// (src/lab/spec/nat-pair.yaml), moved in ONE wildcard handover per
// direction with their conntrack entries:
//
//   1. a handover nat1 → nat2 whose state move fails after the entries were
//      installed at nat2 is rolled back: nat2 is left with none of them,
//      nat1 keeps all, the connections go on through nat1;
//   2. the lab's two wildcard rules (s1: client → server, s2: → 10.0.0.100)
//      move nat1 → nat2 and back, every connection streaming meanwhile: each
//      handover moves exactly one conntrack entry per connection;
//   3. every connection completes byte-identical (sha256 per connection at
//      both ends), none is reset, the server sees each one from
//      10.0.0.100 at the client's own port from the first segment to the last.
//
// The state move's phases (export = leaving, import = arriving, delete =
// commit) are timed per handover; figures go to results/linux-nat.json.
import t, { type Test } from 'tap';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { testLab, type TestLab } from '../helpers/lab.js';
import { repoRoot } from '../helpers/env.js';
import { saveNatFigures } from '../helpers/nat-figures.js';
import { startManyTcpStreams } from '../helpers/tcp-many.js';
import { loadSpec } from '../../src/lab/spec/index.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import type { HandoverContext, StateMoveResult } from '../../src/handover/state-mover.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { ConntrackStateManager } from '../../src/state/conntrack-manager.js';
import { StateError, type Departure } from '../../src/state/types.js';
import { sleep } from '../../src/util/mutex.js';

const OUTSIDE = '10.0.0.100';
const PORT = 5002;
const BASE_PORT = 41000;
const CONNECTIONS = 1000;

interface PhaseMs {
  handover: number;
  entries: number;
  exportMs: number;
  importMs: number;
  deleteMs: number;
}

/** The manager under test, its phases timed; `failNextArrival` makes the next arriving() fail after it installed everything. */
class TimedConntrackManager extends ConntrackStateManager {
  readonly phases = new Map<number, PhaseMs>();
  failNextArrival = false;

  #phase(id: number): PhaseMs {
    let p = this.phases.get(id);
    if (p === undefined) this.phases.set(id, (p = { handover: id, entries: 0, exportMs: 0, importMs: 0, deleteMs: 0 }));
    return p;
  }

  override async leaving(ctx: HandoverContext, signal: AbortSignal): Promise<Departure> {
    const t0 = performance.now();
    const d = await super.leaving(ctx, signal);
    Object.assign(this.#phase(ctx.id), { exportMs: performance.now() - t0, entries: d.records });
    return d;
  }

  override async arriving(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    const t0 = performance.now();
    const r = await super.arriving(ctx, departure, signal);
    this.#phase(ctx.id).importMs = performance.now() - t0;
    if (this.failNextArrival) {
      this.failNextArrival = false;
      throw new StateError(`injected: the move of handover ${ctx.id} fails after its ${r.records} entries were installed at ${ctx.to}`);
    }
    return r;
  }

  override async commit(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<void> {
    const t0 = performance.now();
    await super.commit(ctx, departure, signal);
    this.#phase(ctx.id).deleteMs = performance.now() - t0;
  }
}

const netnsOf = (l: TestLab, node: string): string => `${l.lab.prefix}${node}`;

/** the connections' conntrack entries in an instance (orig tuple to the server's port) — the test's own full listing, not the manager's */
function entriesAt(l: TestLab, instance: string): number {
  const out = execFileSync('ip', ['netns', 'exec', netnsOf(l, instance), 'conntrack', '-L', '-p', 'tcp', '-o', 'extended'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
  return out.split('\n').filter((line) => new RegExp(`dst=10\\.0\\.0\\.2 sport=\\d+ dport=${PORT} `).test(line)).length;
}

function nftCounters(netns: string, table: string): number[] {
  const out = execFileSync('ip', ['netns', 'exec', netns, 'nft', 'list', 'table', 'ip', table], { encoding: 'utf8' });
  return [...out.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

/** segments the server gets on PORT: all, those from OUTSIDE at a port of the client's range, resets; resets the client gets */
function watchTcp(l: TestLab): () => { all: number; fromOutsideRange: number; serverRst: number; clientRst: number } {
  const srv = netnsOf(l, 'server');
  const cli = netnsOf(l, 'client');
  const range = `${BASE_PORT}-${BASE_PORT + CONNECTIONS - 1}`;
  execFileSync('ip', ['netns', 'exec', srv, 'nft', '-f', '-'], {
    input: `table ip sharp_watch {\n chain input {\n  type filter hook input priority filter; policy accept;\n  tcp dport ${PORT} counter\n  tcp dport ${PORT} ip saddr ${OUTSIDE} tcp sport ${range} counter\n  tcp dport ${PORT} tcp flags rst counter\n }\n}\n`,
  });
  execFileSync('ip', ['netns', 'exec', cli, 'nft', '-f', '-'], {
    input: `table ip sharp_watch {\n chain input {\n  type filter hook input priority filter; policy accept;\n  tcp sport ${PORT} tcp flags rst counter\n }\n}\n`,
  });
  return () => {
    const [all, fromOutsideRange, serverRst] = nftCounters(srv, 'sharp_watch');
    return { all: all!, fromOutsideRange: fromOutsideRange!, serverRst: serverRst!, clientRst: nftCounters(cli, 'sharp_watch')[0]! };
  };
}

const natDrops = (l: TestLab, inst: string): number[] => nftCounters(netnsOf(l, inst), 'sharp_nat').slice(0, 2);

const wildcardRulesTo = (l: TestLab, instance: string): number[] =>
  l.dp
    .rules()
    .filter((r) => r.action.outPort === `s1-${instance}` || r.action.outPort === `s2-${instance}`)
    .map((r) => r.id);

t.test(`NAT pair: ${CONNECTIONS} concurrent TCP connections moved nat1 → nat2 and back in one wildcard handover each, with their conntrack entries`, async (t: Test) => {
  const l = await testLab(t, { spec: loadSpec(path.join(repoRoot, 'src/lab/spec/nat-pair.yaml')) });
  const manager = new TimedConntrackManager({ netnsOf: (i) => l.lab.topology.instances.find((x) => x.name === i)?.netns });
  const mover = new StateManagerMover(manager);
  t.teardown(() => mover.close());
  const engine = new HandoverEngine(l.dp, { mover });
  const rules = wildcardRulesTo(l, 'nat1');
  t.equal(rules.length, 2, 'one wildcard rule per direction sends the connections to nat1');
  for (const id of rules) t.equal(l.dp.rules().find((r) => r.id === id)?.match.kind, 'wildcard', `rule ${id} is a wildcard`);
  const watch = watchTcp(l);
  const { client, server } = l.lab;
  const streams = await startManyTcpStreams(t, { client, server, port: PORT, basePort: BASE_PORT, connections: CONNECTIONS, chunkBytes: 1024, everyS: 0.25, idleS: 20 });
  await streams.connected;
  t.equal(entriesAt(l, 'nat1'), CONNECTIONS, `nat1 tracks all ${CONNECTIONS} connections`);
  t.equal(entriesAt(l, 'nat2'), 0, 'nat2 tracks none');
  await sleep(500); // every connection has streamed a couple of rounds

  // 1. the rollback path
  manager.failNextArrival = true;
  const failed = await engine.handover({ rules, from: 'nat1', to: 'nat2', capacityPolicy: 'warn' });
  t.not(failed.outcome, 'completed', `a handover whose state move fails is not completed (${failed.outcome}: ${failed.reason})`);
  t.comment(`rolled back handover ${failed.id}: phases ${JSON.stringify(manager.phases.get(failed.id))}, ${failed.counts.overflow} frames overflowed`);
  t.match(failed.reason, /injected: the move of handover \d+ fails after its 1000 entries were installed at nat2/, 'it failed where the test made it fail, after the import');
  t.equal(manager.phases.get(failed.id)?.entries, CONNECTIONS, `its export found the ${CONNECTIONS} entries`);
  t.equal(entriesAt(l, 'nat2'), 0, 'after the rollback nat2 has none of the entries installed');
  t.equal(entriesAt(l, 'nat1'), CONNECTIONS, `nat1 still has all ${CONNECTIONS}`);
  t.same(wildcardRulesTo(l, 'nat1').sort(), [...rules].sort(), 'both rules still send to nat1');
  await sleep(500);

  // 2. there and back, one wildcard handover each
  const results: HandoverResult[] = [];
  for (const [from, to] of [['nat1', 'nat2'], ['nat2', 'nat1']] as const) {
    const r = await engine.handover({ rules, from, to, capacityPolicy: 'warn' });
    results.push(r);
    t.comment(`handover ${r.id} ${from}→${to}: ${r.outcome}, state move ${round(r.stateMs)} ms, phases ${JSON.stringify(manager.phases.get(r.id))}`);
    t.equal(r.outcome, 'completed', `handover ${r.id} ${from}→${to} completed${r.reason ? ` (${r.reason})` : ''}`);
    t.equal(r.state?.records, CONNECTIONS, `handover ${r.id}: ${r.state?.records} conntrack entries moved, one per connection`);
    t.equal(r.counts.overflow, 0n, `handover ${r.id}: no ring overflow`);
    t.equal(entriesAt(l, to), CONNECTIONS, `${to} tracks all ${CONNECTIONS} connections`);
    t.equal(entriesAt(l, from), 0, `${from} tracks none`);
    if (r.outcome !== 'completed') break; // the rules did not move: the way back would not validate
    await sleep(1000); // the connections stream through the new instance
  }

  // 3. every connection, end to end
  const { sender, receiver } = await streams.stop();
  t.equal(sender.error, null, `the sender finished without error (${sender.error})`);
  t.equal(receiver.error, null, `the receiver finished without error (${receiver.error})`);
  t.equal(receiver.accepted, CONNECTIONS, `the server accepted ${CONNECTIONS} connections, none re-established`);
  const atServer = new Map(receiver.connections.map((c) => [c.peer[1], c]));
  const bad: string[] = [];
  for (const s of sender.connections) {
    const port = s.local[1];
    const r = atServer.get(port); // the NAT keeps the client's port: the server sees OUTSIDE:port
    const why =
      s.error !== null ? `sender: ${s.error}` :
      r === undefined ? 'not seen at the server at its own port' :
      r.peer[0] !== OUTSIDE ? `seen from ${r.peer[0]}` :
      r.error !== null ? `receiver: ${r.error}` :
      !r.eof ? 'no clean end of stream' :
      r.bytes !== s.bytes ? `${r.bytes} of ${s.bytes} bytes` :
      r.sha256 !== s.sha256 ? 'sha256 differs' : undefined;
    if (why !== undefined) bad.push(`${port}: ${why}`);
  }
  t.same(bad, [], `every connection byte-identical at both ends, from ${OUTSIDE} at its own port, closed cleanly`);
  t.ok(sender.connections.every((c) => c.bytes >= 4 * 1024), `every connection streamed through all three handovers (${sender.rounds} rounds of 1 KiB)`);
  const seen = watch();
  t.equal(seen.fromOutsideRange, seen.all, `all ${seen.all} segments the server got came from ${OUTSIDE} at a port of the client's range`);
  t.equal(seen.serverRst, 0, 'no reset reached the server');
  t.equal(seen.clientRst, 0, 'no reset reached the client');
  t.same(['nat1', 'nat2'].map((i) => natDrops(l, i)), [[0, 0], [0, 0]], 'neither NAT dropped a packet (invalid, or new from the outside)');

  const phases = [failed, ...results].flatMap((r) => manager.phases.get(r.id) ?? []).map((p) => ({ ...p, exportMs: round(p.exportMs), importMs: round(p.importMs), deleteMs: round(p.deleteMs) }));
  const summary = {
    connections: CONNECTIONS,
    rounds: sender.rounds,
    bytesPerConnection: sender.connections[0]?.bytes,
    phases,
    stateMoveMs: results.map((r) => round(r.stateMs)),
    handoverMs: results.map((r) => round(r.durationMs)),
    held: results.map((r) => Number(r.counts.held)),
    conntrackCommands: manager.commands.length,
  };
  t.comment(`many connections: ${JSON.stringify(summary)}`);
  saveNatFigures('manyConnections', summary);
});

const round = (x: number): number => Number(x.toFixed(1));
