// The controller's P4Runtime switches and the nodes that read their ports
// (a deploy spec's switches.N.node): what is wrong in the configs is said
// before any P4Runtime connection, naming the switch and the node; a node
// that reads arrivals but not BMv2's ring drops is warned about; a poll
// reads arrivals and drops in one call. Fake nodes, no switch, no root.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { connectP4RuntimeSwitches, nodePortReaders } from '../../src/deploy/controller.js';
import { NodeCallError, type SwitchPortInputs } from '../../src/node/client.js';
import { DataPlaneError } from '../../src/dataplane/types.js';
import type { DeploySwitch } from '../../src/deploy/spec.js';

// nothing listens there: a test that got as far as connecting fails
const s2: DeploySwitch = { name: 's2', target: 'bmv2', p4runtime: 'unix:/nonexistent/sharpt-s2.grpc', deviceId: 1, pipeline: 'existing', relayAround: false, ports: { 's2-vnf1': { port: 1, instance: 'vnf1', side: 1 } }, node: 'sw2' };

t.test("a switch's node must be connected and must read the switch's ports", async (t) => {
  await t.rejects(connectP4RuntimeSwitches([s2], { nodes: new Map() }), new DataPlaneError('switch s2: its node sw2 (which reads its ports) is not connected'));
  const asked: string[] = [];
  const unlisted = {
    switchPortInputs: async (sw: string): Promise<SwitchPortInputs | undefined> => {
      asked.push(sw);
      throw new NodeCallError('sw2', 'SwitchArrivals', grpc.status.NOT_FOUND, `node sw2: SwitchArrivals: node sw2 reads no P4 switch '${sw}' (p4Switches: s3)`);
    },
  };
  const err = await connectP4RuntimeSwitches([s2], { nodes: new Map([['sw2', unlisted]]) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof DataPlaneError, 'a DataPlaneError');
  t.match((err as Error).message, /^switch s2: node sw2 does not read its ports \(.*reads no P4 switch 's2' \(p4Switches: s3\)\): list the switch under that node's p4Switches$/, "naming the switch, the node and the node's answer");
  t.same(asked, ['s2'], 'the node was asked about s2, once');
});

t.test("a node that reads a switch's arrivals but not its rings' drops: warned about once, naming the switch", async (t) => {
  const calls: string[] = [];
  const warned: string[] = [];
  const estimating = {
    switchPortInputs: async (sw: string): Promise<SwitchPortInputs | undefined> => {
      calls.push(sw);
      return { arrivals: new Map([['s2-vnf1', 5n]]) };
    },
  };
  // the warning comes before connecting, which fails here (nothing listens)
  await t.rejects(connectP4RuntimeSwitches([s2], { nodes: new Map([['sw2', estimating]]), warn: (m) => warned.push(m) }));
  t.same(warned.filter((m) => /losses are estimated, not counted/.test(m)), [
    "switch s2: node sw2 reads its ports' arrivals but not what BMv2's input rings drop (give the node's p4Switches entry pidFile): losses are estimated, not counted",
  ]);
  t.same(calls, ['s2'], 'arrivals and drops checked with one call');

  warned.length = 0;
  const counting = { switchPortInputs: async (): Promise<SwitchPortInputs> => ({ arrivals: new Map([['s2-vnf1', 5n]]), dropped: new Map([['s2-vnf1', 1n]]) }) };
  await t.rejects(connectP4RuntimeSwitches([s2], { nodes: new Map([['sw2', counting]]), warn: (m) => warned.push(m) }));
  t.same(warned.filter((m) => /estimated/.test(m)), [], 'a node that counts the drops: no warning');
});

t.test('a poll reads arrivals then drops: one call for both, the same reading', async (t) => {
  let n = 0n;
  const reads: bigint[] = [];
  const r = nodePortReaders(async () => {
    n += 1n;
    reads.push(n);
    return { arrivals: new Map([['p', n * 10n]]), dropped: new Map([['p', n]]) };
  });
  t.same(await r.arrivals(), new Map([['p', 10n]]));
  t.same(await r.inputDrops(), new Map([['p', 1n]]), "the arrivals' reading's drops");
  t.same(reads, [1n], 'one call');
  t.same(await r.inputDrops(), new Map([['p', 2n]]), 'drops asked again: a reading of their own');
  t.same(await r.arrivals(), new Map([['p', 30n]]), 'the next poll: a new reading');
  t.same(await r.inputDrops(), new Map([['p', 3n]]));
  t.same(reads, [1n, 2n, 3n], 'one call per poll');
  const old = nodePortReaders(async () => ({ arrivals: new Map([['p', 1n]]) }));
  t.same([await old.arrivals(), await old.inputDrops()], [new Map([['p', 1n]]), undefined], 'a node without drops: undefined');
});
