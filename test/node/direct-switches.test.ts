// NodeDeployment with switches the controller drives itself (DirectSwitches,
// e.g. P4Runtime): calls go to the host of the switch or rule, ids are
// unique across hosts, a host without setRuleActions gets setRuleAction per
// rule in order. A fake layer (in-memory switch hosts), no root.
import t from 'tap';
import { NodeDeployment, type DirectSwitches } from '../../src/node/client.js';
import { Phase, RuleError, type Rule, type RuleAction } from '../../src/dataplane/types.js';

const none: RuleAction = { outPort: 'p1', phase: Phase.NONE, handoverId: 0 };

class FakeSwitches implements DirectSwitches {
  readonly quiescenceMs: number;
  readonly rulesById = new Map<number, Rule>();
  readonly calls: string[] = [];
  closed = false;
  constructor(
    readonly name: string,
    q: number,
  ) {
    this.quiescenceMs = q;
  }
  switches = (): string[] => [this.name];
  portTowards = (_sw: string, instance: string): string | undefined => (instance === 'vnf1' ? 'p-vnf1' : undefined);
  switchPorts = (): { name: string; instance?: string }[] => [{ name: 'p1' }, { name: 'p-vnf1', instance: 'vnf1' }];
  addRule = async (r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> => {
    const rule = { ...r, id: r.id! };
    this.rulesById.set(rule.id, rule);
    return rule;
  };
  deleteRule = async (id: number): Promise<void> => void this.rulesById.delete(id);
  getRule = (id: number): Rule | undefined => this.rulesById.get(id);
  rules = (): Rule[] => [...this.rulesById.values()];
  setRuleAction = async (id: number, a: RuleAction): Promise<void> => {
    this.calls.push(`set ${id} ${a.phase}`);
    this.rulesById.get(id)!.action = a;
  };
  ruleCounters = async () => ({ packets: 0n, bytes: 0n });
  portCounters = async () => [];
  handoverCounters = async () => ({ pre: 0n, post: 0n });
  resetHandoverCounters = async (): Promise<void> => undefined;
  setRelay = async (): Promise<void> => undefined;
  clearRelay = async (): Promise<void> => undefined;
  close = (): void => void (this.closed = true);
}

t.test('switch calls reach the host of their switch or rule; ids are unique across hosts', async (t) => {
  const a = new FakeSwitches('s1', 50);
  const b = new FakeSwitches('s2', 20);
  const d = new NodeDeployment([], [a, b]);
  const sc = d.switchControl;
  t.same(sc.switches(), ['s1', 's2']);
  t.equal(sc.quiescenceMs, 50, 'Q: the longest of the hosts');
  const r1 = await sc.addRule({ switch: 's1', match: { kind: 'wildcard', priority: 0 }, action: none });
  const r2 = await sc.addRule({ switch: 's2', match: { kind: 'wildcard', priority: 0 }, action: none });
  t.same([r1.id, r2.id], [1, 2], 'the next id after every host\'s rules');
  t.same([...a.rulesById.keys(), ...b.rulesById.keys()], [1, 2]);
  await t.rejects(sc.addRule({ id: 1, switch: 's2', match: { kind: 'wildcard', priority: 0 }, action: none }), new RuleError('rule id 1 exists already'));
  await t.rejects(sc.addRule({ switch: 's9', match: { kind: 'wildcard', priority: 0 }, action: none }), { message: /no node runs switch 's9' and no switch of the deployment is named so \(switches: s1, s2\)/ });
  t.equal(sc.portTowards('s2', 'vnf1'), 'p-vnf1');
  t.same(d.switchPorts('s1'), [{ name: 'p1' }, { name: 'p-vnf1', instance: 'vnf1' }]);
  t.equal(d.switchPorts('s9'), undefined);
  await sc.deleteRule(2);
  t.equal(b.rulesById.size, 0, 'deleted where it was');
  d.close();
  t.ok(a.closed && b.closed, 'close closes the direct switches');
});

t.test('setRuleActions on hosts without it: setRuleAction per rule, in order, host by host', async (t) => {
  const a = new FakeSwitches('s1', 50);
  const b = new FakeSwitches('s2', 50);
  const d = new NodeDeployment([], [a, b]);
  for (const sw of ['s1', 's2', 's1']) await d.switchControl.addRule({ switch: sw, match: { kind: 'wildcard', priority: 0 }, action: none });
  const pre = { outPort: 'p-vnf1', phase: Phase.PRE, handoverId: 7 };
  await d.switchControl.setRuleActions!([{ id: 3, action: pre }, { id: 1, action: pre }, { id: 2, action: pre }]);
  t.same(a.calls, ['set 3 1', 'set 1 1']);
  t.same(b.calls, ['set 2 1']);
  t.same(d.switchControl.getRule(2)!.action, pre);
  t.equal(await d.switchControl.sentTowardsInstances!('s1'), undefined, 'no exact quiescence barrier: the engine waits Q');
});
