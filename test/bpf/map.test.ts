// Map round-trips against the real kernel, for every map type the toolkit uses.
import t from 'tap';
import { BpfCollection, MapType, MapUpdate, numPossibleCpus, u32, u64 } from '../../src/bpf/index.js';
import { testObject } from '../helpers/env.js';

const key = (n: number): Buffer => u32.encode(n);
const val = (n: bigint): Buffer => u64.encode(n);

t.test('maps of every type round-trip', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());

  t.test('hash: update, lookup, iterate, delete', async (t) => {
    const m = coll.map('fx_hash');
    t.equal(m.info.type, MapType.HASH);
    for (let i = 1; i <= 5; i++) m.update(key(i), val(BigInt(i * 100)));
    t.same(m.lookup(key(3)), val(300n));
    t.equal(m.lookup(key(42)), undefined, 'a missing key is undefined, not an error');
    t.same([...m.keys()].map((k) => u32.decode(k)).sort(), [1, 2, 3, 4, 5]);
    t.equal(m.delete(key(3)), true);
    t.equal(m.delete(key(3)), false, 'deleting a missing key reports false');
    t.throws(() => m.update(key(1), val(1n), MapUpdate.NOEXIST), { name: 'BpfError', code: 'EEXIST' });
    t.same(m.lookupAndDelete(key(4)), val(400n));
    t.equal(m.lookup(key(4)), undefined);
    m.clear();
    t.equal([...m.keys()].length, 0);
  });

  t.test('hash: batch update, lookup and delete', async (t) => {
    const m = coll.map('fx_hash');
    const n = 600; // more than one batch chunk
    const keys = Array.from({ length: n }, (_, i) => key(i + 1));
    const values = Array.from({ length: n }, (_, i) => val(BigInt(i + 1) * 3n));
    t.equal(m.updateBatch(keys, values), n);
    const got = m.lookupBatch(128);
    t.equal(got.keys.length, n, 'every element comes back through the batch cursor');
    const pairs = new Map(got.keys.map((k, i) => [u32.decode(k), u64.decode(got.values[i]!)]));
    t.equal(pairs.get(1), 3n);
    t.equal(pairs.get(600), 1800n);
    t.equal(m.deleteBatch(keys), n);
    t.equal(m.lookupBatch().keys.length, 0);
  });

  t.test('hash: a batch delete of keys some of which are missing deletes every present one', async (t) => {
    const m = coll.map('fx_hash');
    const keys = Array.from({ length: 100 }, (_, i) => key(i + 1));
    m.updateBatch(keys.filter((_, i) => i % 3 !== 0), keys.filter((_, i) => i % 3 !== 0).map(() => val(1n)));
    // the kernel stops a batch at a missing key: the first, one in the middle, two in a row, the last
    t.throws(() => m.deleteBatch(keys), { name: 'BpfError', code: 'ENOENT' }, 'a plain batch delete stops at the first missing key');
    m.updateBatch(keys.filter((_, i) => i % 3 !== 0), keys.filter((_, i) => i % 3 !== 0).map(() => val(1n)));
    t.equal(m.deletePresentBatch([...keys, key(1000), key(1001)]), 66, 'the 66 present keys deleted');
    t.equal(m.lookupBatch().keys.length, 0, 'none left');
    t.equal(m.deletePresentBatch([]), 0);
    t.throws(() => m.deletePresentBatch([Buffer.alloc(3)]), RangeError, 'a key of the wrong size is refused');
  });

  t.test('array: every slot exists, updates stick, deletes are refused', async (t) => {
    const m = coll.map('fx_array');
    t.equal(m.info.type, MapType.ARRAY);
    t.same(m.lookup(key(7)), val(0n));
    m.update(key(7), val(77n));
    t.same(m.lookup(key(7)), val(77n));
    t.throws(() => m.update(key(16), val(1n)), { name: 'BpfError', code: 'E2BIG' });
    t.throws(() => m.delete(key(7)), { name: 'BpfError', code: 'EINVAL' });
    t.equal(m.lookupBatch(5).keys.length, 16, 'array batch lookup walks all slots');
  });

  t.test('per-CPU array: one value per possible CPU', async (t) => {
    const m = coll.map('fx_percpu');
    t.equal(m.info.type, MapType.PERCPU_ARRAY);
    t.ok(m.perCpu);
    const cpus = numPossibleCpus();
    t.ok(cpus >= 1);
    m.updatePerCpu(key(1), Array.from({ length: cpus }, (_, c) => val(BigInt(c + 10))));
    const per = m.lookupPerCpu(key(1))!;
    t.equal(per.length, cpus);
    t.same(per.map((b) => u64.decode(b)), Array.from({ length: cpus }, (_, c) => BigInt(c + 10)));
    const typed = m.typed(u32, u64);
    typed.set(2, 5n);
    t.same(typed.getPerCpu(2), Array.from({ length: cpus }, () => 5n), 'a typed set writes the value on every CPU');
  });

  t.test('LRU hash: evicts instead of failing when full', async (t) => {
    const m = coll.map('fx_lru');
    t.equal(m.info.type, MapType.LRU_HASH);
    const typed = m.typed(u32, u64);
    for (let i = 0; i < 1000; i++) typed.set(i, BigInt(i));
    const count = [...m.keys()].length;
    t.ok(count > 0 && count <= 1000, `the map holds ${count} of 1000 entries and never refused an update`);
    t.equal(typed.get(999), 999n, 'the newest entry is present');
  });

  t.test('devmap: holds ifindexes of real interfaces', async (t) => {
    const m = coll.map('fx_devmap');
    t.equal(m.info.type, MapType.DEVMAP);
    m.update(key(0), u32.encode(1)); // loopback is ifindex 1 in every namespace
    t.same(m.lookup(key(0)), u32.encode(1));
    t.throws(() => m.update(key(1), u32.encode(0x7ffffff0)), { name: 'BpfError', code: 'EINVAL' }, 'an ifindex that does not exist is refused');
    t.equal(m.delete(key(0)), true);
  });

  t.test('prog array: holds program fds, reads back program ids', async (t) => {
    const m = coll.map('fx_progs');
    t.equal(m.info.type, MapType.PROG_ARRAY);
    const tail = coll.program('xdp_tail');
    m.update(key(0), u32.encode(tail.fd));
    t.equal(u32.decode(m.lookup(key(0))!), tail.id, 'user space reads back the id of the program in the slot');
    t.equal(m.delete(key(0)), true);
  });

  t.test('ring buffer map is there with its size', async (t) => {
    const m = coll.map('fx_events');
    t.equal(m.info.type, MapType.RINGBUF);
    t.equal(m.info.maxEntries, 64 * 1024);
  });
});

t.test('maps can be resized before load', async (t) => {
  const { BpfObjectSpec } = await import('../../src/bpf/index.js');
  const spec = BpfObjectSpec.open(testObject('binding_fixture'));
  spec.setMaxEntries('fx_hash', 4096);
  t.equal(spec.maps().find((m) => m.name === 'fx_hash')?.maxEntries, 4096);
  const coll = spec.load();
  t.teardown(() => coll.close());
  t.equal(coll.map('fx_hash').info.maxEntries, 4096, 'the kernel map has the new size');
});

t.test('codec sizes are checked against the kernel map', async (t) => {
  const coll = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => coll.close());
  t.throws(() => coll.map('fx_hash').typed(u64, u64), /key codec is 8 bytes, the map's key 4/);
});
