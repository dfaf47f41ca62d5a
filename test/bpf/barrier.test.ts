// The CPU barrier behind the engine's quiescence event, and the one-ioctl
// link check of the release.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { cpuBarrier, interfaceFlags, withNetns } from '../../src/bpf/index.js';
import { ip } from '../../src/net/iproute.js';
import { testVethPair } from '../helpers/netns.js';

/** CPUs in /sys/devices/system/cpu/online ("0-1,4") */
function onlineCpus(): number {
  return readFileSync('/sys/devices/system/cpu/online', 'utf8')
    .trim()
    .split(',')
    .map((r) => r.split('-').map(Number))
    .reduce((n, [a, b]) => n + (b === undefined ? 1 : b - a! + 1), 0);
}

t.test('cpuBarrier runs the thread on every online CPU, and can be called again', async (t) => {
  t.equal(cpuBarrier(), onlineCpus(), 'every online CPU passed');
  t.equal(cpuBarrier(), onlineCpus(), 'the affinity was restored: all CPUs are reachable again');
});

t.test('interfaceFlags: up and running, down, no carrier, absent', async (t) => {
  const { nsA, nsB } = testVethPair(t, 'if');
  t.same(withNetns(nsA, () => interfaceFlags('veth-a')), { up: true, running: true, carrier: true }, 'both ends up: running, with carrier');
  ip(['link', 'set', 'veth-b', 'down'], nsB);
  t.match(withNetns(nsA, () => interfaceFlags('veth-a')), { up: true, carrier: false }, 'the peer down: up, no carrier (at once: IFF_RUNNING follows later)');
  t.match(withNetns(nsB, () => interfaceFlags('veth-b')), { up: false, running: false }, 'down');
  t.throws(() => withNetns(nsA, () => interfaceFlags('no-such-if')), { name: 'BpfError', code: 'ENODEV' }, 'an absent interface: BpfError ENODEV');
});
