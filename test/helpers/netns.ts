/** Network namespaces and veth pairs for tests, removed on teardown (also on failure). */
import type { Test } from 'tap';
import { createNetns, deleteNetns, createVeth, type VethEnd } from '../../src/net/iproute.js';
import { uniqueName } from './env.js';

export function testNetns(t: Test, tag: string): string {
  const name = uniqueName(tag);
  createNetns(name);
  t.teardown(() => deleteNetns(name));
  return name;
}

/** Two namespaces joined by a veth pair `a` (in the first) — `b` (in the second). */
export function testVethPair(t: Test, tag: string, mtu?: number): { nsA: string; nsB: string; a: VethEnd & { netns: string }; b: VethEnd & { netns: string } } {
  const nsA = testNetns(t, `${tag}a`);
  const nsB = testNetns(t, `${tag}b`);
  const a = { name: 'veth-a', netns: nsA, mac: '02:00:00:00:00:0a', address: '10.99.0.1/24' };
  const b = { name: 'veth-b', netns: nsB, mac: '02:00:00:00:00:0b', address: '10.99.0.2/24' };
  createVeth(a, b, mtu);
  return { nsA, nsB, a, b };
}
