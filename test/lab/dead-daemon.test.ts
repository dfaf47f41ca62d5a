// A lab whose daemon is gone, as the run directory shows it (no lab is
// built: the state file is written by hand, its daemon a process that has
// exited): every command says what to run, and lab recover refuses what it
// cannot adopt before it starts anything.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { runSync } from '../helpers/cli.js';
import { deadDaemonMessage } from '../../src/cli/lab-commands.js';
import type { LabState } from '../../src/lab/run-dir.js';

const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-dead-'));
t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
const env = { SHARPCTL_RUN_DIR: runDir };

/** a pid that has exited (a start time of 1 tick: no live process that reuses the pid has it) */
const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;

function fakeLab(adoptable: boolean): string {
  const name = `zt${randomBytes(3).toString('hex')}`;
  const dir = path.join(runDir, name);
  mkdirSync(dir, { recursive: true });
  const st: LabState = {
    name,
    pid: deadPid,
    pidStart: 1,
    prefix: `sharp-${name}-`,
    status: 'ready',
    startedAt: new Date().toISOString(),
    socket: path.join(dir, 'ctl.sock'),
    namespaces: [`sharp-${name}-s1`],
    target: 'xdp',
    ...(adoptable ? { adopt: { instances: 2, nodesDir: path.join(dir, 'work', 'nodes'), nodes: [{ role: 's1', pid: deadPid, pidStart: 1 }], management: { netns: `sharp-${name}-mgmt-net`, rootIfname: 'sharpm-none' } } } : {}),
  };
  writeFileSync(path.join(dir, 'state.json'), JSON.stringify(st));
  return name;
}

t.test('the message: recover for a lab that can be adopted, down for any other', async (t) => {
  t.match(deadDaemonMessage({ name: 'default', pid: 42, adopt: { instances: 2, nodesDir: '/x', nodes: [], management: { netns: 'n', rootIfname: 'r' } } }), /lost its daemon \(pid 42 is gone\); its node processes keep forwarding\. sharpctl lab recover starts a new daemon .*; sharpctl lab down removes it instead/);
  t.match(deadDaemonMessage({ name: 'lab2', pid: 42 }), /cannot be recovered .*: sharpctl lab down --name lab2 removes it, then lab up --name lab2/);
});

t.test('commands on a lab whose daemon died say to run lab recover', async (t) => {
  const name = fakeLab(true);
  for (const args of [['status'], ['rule', 'list'], ['handover', '1', '--to', 'vnf2'], ['traffic', 'stop'], ['report']]) {
    const r = runSync([...args, '--name', name], { env });
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`);
    t.match(r.stderr, new RegExp(`lab '${name}' lost its daemon \\(pid ${deadPid} is gone\\); its node processes keep forwarding\\. sharpctl lab recover --name ${name}`), `${args.join(' ')}: says so`);
  }
  const st = JSON.parse(runSync(['lab', 'status', '--name', name, '--json'], { env }).stdout) as { labs: { status: string }[] };
  t.match(st.labs[0]?.status, new RegExp(`crashed \\(daemon gone: sharpctl lab recover --name ${name} adopts the lab`));
  // its namespaces are gone (there never were any): recover refuses before it starts a daemon
  const rec = runSync(['lab', 'recover', '--name', name], { env });
  t.equal(rec.code, 1);
  t.match(rec.stderr, new RegExp(`cannot be recovered: its namespace\\(s\\) sharp-${name}-s1 are gone; sharpctl lab down --name ${name} removes the rest`));
});

t.test('a lab that cannot be adopted is offered lab down only', async (t) => {
  const name = fakeLab(false);
  for (const args of [['status'], ['lab', 'recover']]) {
    const r = runSync([...args, '--name', name], { env });
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`);
    t.match(r.stderr, new RegExp(`lab '${name}' lost its daemon .* cannot be recovered .*sharpctl lab down --name ${name} removes it`));
  }
  const none = runSync(['lab', 'recover', '--name', 'ztnone'], { env });
  t.equal(none.code, 1);
  t.match(none.stderr, /lab 'ztnone' is not up: nothing to recover \(sharpctl lab up --name ztnone\)/);
});
