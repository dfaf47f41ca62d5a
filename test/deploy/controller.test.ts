// The controller's P4Runtime switches and the nodes that read their ports
// (a deploy spec's switches.N.node): what is wrong in the configs is said
// before any P4Runtime connection, naming the switch and the node. Fake
// nodes, no switch, no root.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { connectP4RuntimeSwitches } from '../../src/deploy/controller.js';
import { NodeCallError } from '../../src/node/client.js';
import { DataPlaneError } from '../../src/dataplane/types.js';
import type { DeploySwitch } from '../../src/deploy/spec.js';

// nothing listens there: a test that got as far as connecting fails
const s2: DeploySwitch = { name: 's2', target: 'bmv2', p4runtime: 'unix:/nonexistent/sharpt-s2.grpc', deviceId: 1, pipeline: 'existing', relayAround: false, ports: { 's2-vnf1': { port: 1, instance: 'vnf1', side: 1 } }, node: 'sw2' };

t.test("a switch's node must be connected and must read the switch's ports", async (t) => {
  await t.rejects(connectP4RuntimeSwitches([s2], { nodes: new Map() }), new DataPlaneError('switch s2: its node sw2 (which reads its ports) is not connected'));
  const asked: string[] = [];
  const unlisted = {
    switchArrivals: async (sw: string): Promise<Map<string, bigint> | undefined> => {
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
