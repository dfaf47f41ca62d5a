// Runs after every other test file has finished (test/run.mjs runs it last):
// the suite must leave no namespaces, pinned objects or loaded programs behind.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { TEST_PREFIX } from './helpers/env.js';
import { listNetns } from '../src/net/iproute.js';

t.test('no test namespaces are left', async (t) => {
  t.same(listNetns(TEST_PREFIX), []);
  t.same(listNetns('sharp-zt'), [], 'no lab the CLI tests brought up');
  t.same(listNetns('sharp-demo'), [], 'no demo lab');
});

t.test('no pinned test objects are left in bpffs', async (t) => {
  const left = existsSync('/sys/fs/bpf') ? readdirSync('/sys/fs/bpf').filter((n) => n.startsWith(TEST_PREFIX) || n.startsWith('sharp')) : [];
  t.same(left, []);
});

t.test('no test programs are still loaded or attached', async (t) => {
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as { name?: string }[];
  const ours = new Set(['xdp_fixture', 'xdp_tail', 'xdp_count', 'xdp_emit', 'xdp_redirect_fi', 'tc_fixture', 'sharp_switch', 'agent', 'agent_replay', 'agent_release_f', 'vnf_counter', 'probe_sink', 'tg_tx', 'tg_sink', 'bench_tx', 'bench_bare', 'bench_sink', 'tx_inject']);
  t.same(progs.filter((p) => p.name !== undefined && ours.has(p.name)).map((p) => p.name), []);
});
