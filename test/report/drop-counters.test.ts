// Drop counters for status and report: the exposition parser reads the
// nodes' metrics as they write them (labels escaped), and the text shows
// every reason with its total, the places where it is not 0, and what a data
// plane could not read. (A real lab's counters: test/cli/status-drops.)
import t from 'tap';
import { AGENT_PROGRAM_REASONS, DropCountersError, dropCountersText, parseExposition, readDropCounters, type DropCounters } from '../../src/report/drop-counters.js';
import { Exposition } from '../../src/node/metrics.js';
import type { InterfaceDrops, PortCounters } from '../../src/dataplane/types.js';

t.test('parseExposition reads what a node writes, escapes included', async (t) => {
  const text = new Exposition()
    .counter('sharp_switch_port_drops_total', 'drops', [
      [{ switch: 's1', port: 's1-client', reason: 'shim' }, 3n],
      [{ switch: 's1', port: 'we"ird\\port\nx', reason: 'no_rule' }, 7n],
    ])
    .gauge('sharp_node_start_time_seconds', 'start', [[{ node: 'n' }, 1.5]])
    .text();
  const s = parseExposition(text);
  t.same(s, [
    { name: 'sharp_switch_port_drops_total', labels: { switch: 's1', port: 's1-client', reason: 'shim' }, value: 3 },
    { name: 'sharp_switch_port_drops_total', labels: { switch: 's1', port: 'we"ird\\port\nx', reason: 'no_rule' }, value: 7 },
    { name: 'sharp_node_start_time_seconds', labels: { node: 'n' }, value: 1.5 },
  ]);
  t.same(parseExposition('up 1\n'), [{ name: 'up', labels: {}, value: 1 }], 'a sample without labels');
});

t.test('a line that is no sample is an error naming the line', async (t) => {
  t.throws(() => parseExposition('# HELP x y\nnot a sample at all\n'), { name: 'DropCountersError', message: /metrics line 2 is not a sample/ });
  t.throws(() => parseExposition('x{a="1",b=2} 3\n'), DropCountersError);
});

const port = (p: string, c: Partial<PortCounters> = {}): PortCounters => ({
  port: p,
  packets: 0n,
  bytes: 0n,
  txPackets: 0n,
  txBytes: 0n,
  dropNoRule: 0n,
  dropShim: 0n,
  dropOther: 0n,
  relayed: 0n,
  xmitFailed: 0n,
  redirectFailed: 0n,
  ...c,
});

t.test('without node metrics: the port counters as they are, the rest named as not read', async (t) => {
  const d = await readDropCounters({
    dp: {
      kind: 'bmv2',
      switches: () => ['s1'],
      portCounters: async () => [port('s1-client', { dropShim: 2n, dropOther: 1n }), port('s1-vnf1', { xmitFailed: 4n })],
      agentInstances: () => [{ name: 'vnf1', ringCapacity: 64, ringCount: 1 }],
      interfaceDrops: async (): Promise<InterfaceDrops[]> => [{ iface: 'eth0', side: 0, xmitFailed: 0n, redirectFailed: 5n }],
    },
  });
  t.equal(d.total, 2 + 1 + 4 + 5, 'every counter in the total');
  t.same(d.switchPorts[0], { switch: 's1', port: 's1-client', dropNoRule: 0, dropShim: 2, dropOther: 1, xmitFailed: 0, redirectFailed: 0 });
  t.equal(d.agents[0]!.shimRejected, undefined, 'agent counters not invented');
  t.equal(d.missing?.length, 2, 'the summed switch reasons and the agent counters are named as not read');
  const text = dropCountersText(d).join('\n');
  t.match(text, 'forged shim 2 (s1/s1-client 2)');
  t.match(text, 'other (malformed, bad action, no headroom, no tx port) 1 (s1/s1-client 1)');
  t.match(text, 'device could not transmit 4 (s1/s1-vnf1 4)');
  t.match(text, 'redirect refused 5 (vnf1/eth0 5)');
  t.match(text, /not read: the agent programs' drops/);
});

t.test('the text lists every reason, 0 or not', async (t) => {
  const d: DropCounters = {
    total: 1,
    switchPorts: [{ switch: 's1', port: 's1-client', dropNoRule: 0, dropShim: 0, dropMalformed: 0, dropBadAction: 0, dropNoHeadroom: 0, dropNoTx: 1, dropOther: 1, xmitFailed: 0, redirectFailed: 0 }],
    agents: [{ instance: 'vnf1', ...Object.fromEntries(AGENT_PROGRAM_REASONS.map(([k]) => [k, 0])), interfaces: [] }],
  };
  const text = dropCountersText(d).join('\n');
  for (const label of ['no rule 0', 'forged shim 0', 'malformed 0', 'bad action 0', 'no headroom for the shim 0', 'no tx port 1 (s1/s1-client 1)', ...AGENT_PROGRAM_REASONS.map(([, l]) => `${l} 0`)]) t.match(text, label);
  t.match(text, /^drops: 1 frame in all/);
  t.notMatch(text, 'not read');
});

t.test('a node whose metrics cannot be read: the rest is shown, the failure named', async (t) => {
  const d = await readDropCounters({
    dp: { kind: 'xdp', switches: () => ['s1'], portCounters: async () => [port('s1-client', { dropShim: 1n })], agentInstances: () => [], interfaceDrops: async () => [] },
    metricsSockets: ['/nonexistent/sharpt-metrics.sock'],
  });
  t.equal(d.total, 1, 'the port counters still count');
  t.match(d.missing?.join('\n') ?? '', /metrics on \/nonexistent\/sharpt-metrics\.sock: .*ENOENT/, 'the unreadable socket is named with the reason');
});
