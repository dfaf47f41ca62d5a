// The Wireshark dissector (src/wireshark/sharp.lua) read by tshark on a
// pcapng of real frames: probes built by src/net/frame.ts, marked PRE and
// POST by the XDP switch itself (BPF_PROG_TEST_RUN of sharp_switch with
// marking rules, the output bytes taken as they leave), a RELAY shim as the
// agent writes it, and a plain probe. Checks every field, the display
// filters, the inner IPv4/UDP dissection, packet comments, the constants
// against the generated ABI, and both ways of installing it.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfObjectSpec, XdpAction, u32, withNetns, xdpMd, MapUpdate } from '../../src/bpf/index.js';
import {
  sharpPortInfoCodec,
  sharpExactRuleCodec,
  sharpRuleActionCodec,
  sharpFlowKeyCodec,
  sharpProbeCodec,
  SHARP_PORT_HOST,
  SHARP_PORT_VNF,
  SHARP_PHASE_NONE,
  SHARP_PHASE_PRE,
  SHARP_PHASE_POST,
  SHARP_PHASE_RELAY,
  SHARP_ETH_P_SHIM,
  SHARP_SHIM_LEN,
  SHARP_TAG_HID_MASK,
  SHARP_PROBE_MAGIC,
  SHARP_PROBE_LEN,
  SHARP_HID_MAX,
  SHARP_DEFAULT_MAX_IFINDEX,
} from '../../src/generated/abi.js';
import { udpFrame, ipv4Number, IPPROTO_UDP } from '../../src/net/frame.js';
import { PcapngWriter } from '../../src/net/pcapng.js';
import { DISSECTOR_SOURCE, installDissector, personalPluginDir } from '../../src/wireshark/install.js';
import { programObject, repoRoot } from '../helpers/env.js';
import { testPorts } from '../helpers/programs.js';

const tshark = spawnSync('tshark', ['--version'], { encoding: 'utf8' });
if (tshark.status !== 0) {
  t.fail('tshark is missing: make deps installs it (APT_PACKAGES)');
  t.end();
} else {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-wireshark-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

  const probe = (flow: number, seq: bigint, stamp: bigint): Buffer =>
    udpFrame({
      srcMac: '02:00:00:00:01:0a',
      dstMac: '02:00:00:00:01:0b',
      srcIp: '10.0.1.1',
      dstIp: '10.0.2.1',
      srcPort: 20000 + flow,
      dstPort: 9000,
      payload: Buffer.concat([sharpProbeCodec.encode({ magic: SHARP_PROBE_MAGIC, flow, seq, stamp, tx_ns: 123456789n }), Buffer.alloc(54, 0)]),
    });

  /** flow number -> (phase, hid) the switch marks it with; flow 3 unmarked */
  const MARKS: Record<number, { phase: number; hid: number }> = {
    0: { phase: SHARP_PHASE_PRE, hid: 7 },
    1: { phase: SHARP_PHASE_POST, hid: 7 },
    2: { phase: SHARP_PHASE_PRE, hid: SHARP_HID_MAX },
    3: { phase: SHARP_PHASE_NONE, hid: 0 },
  };

  interface Frame {
    data: Buffer;
    comment: string;
  }

  t.test('the dissector on frames the switch marked', async (t) => {
    const ports = testPorts(t, 'wsd', ['p0', 'p1', 'p2']);
    const spec = BpfObjectSpec.open(programObject('switch'));
    spec.setMaxEntries('ports', Math.max(SHARP_DEFAULT_MAX_IFINDEX, ...Object.values(ports.ifindex).map((i) => i + 1)));
    const coll = spec.load();
    t.teardown(() => coll.close());
    const PORTS = [
      { ifname: 'p0', role: SHARP_PORT_HOST },
      { ifname: 'p1', role: SHARP_PORT_VNF },
      { ifname: 'p2', role: SHARP_PORT_VNF },
    ];
    PORTS.forEach((p, slot) => coll.map('ports').update(u32.encode(ports.ifindex[p.ifname]!), sharpPortInfoCodec.encode({ slot, role: p.role })));
    withNetns(ports.netns, () => PORTS.forEach((p, slot) => coll.map('tx_ports').update(u32.encode(slot), u32.encode(ports.ifindex[p.ifname]!))));
    for (const [flow, m] of Object.entries(MARKS)) {
      const key = sharpFlowKeyCodec.encode({ saddr: ipv4Number('10.0.1.1'), daddr: ipv4Number('10.0.2.1'), sport: 20000 + Number(flow), dport: 9000, proto: IPPROTO_UDP });
      coll.map('rules_exact').update(key, sharpExactRuleCodec.encode({ rule_id: 1 + Number(flow), action: sharpRuleActionCodec.encode({ out_slot: m.phase === SHARP_PHASE_POST ? 2 : 1, hid: m.hid, phase: m.phase, flags: 0 }) }), MapUpdate.NOEXIST);
    }
    const frames: Frame[] = [];
    const prog = coll.program('sharp_switch');
    for (let seq = 1n; seq <= 3n; seq++)
      for (const flow of [0, 1, 2, 3]) {
        const input = probe(flow, seq, seq * 10n + BigInt(flow));
        const r = prog.run({ data: input, context: xdpMd({ dataLen: input.length, ingressIfindex: ports.ifindex['p0']! }), netns: ports.netns });
        t.equal(r.retval, XdpAction.REDIRECT, `flow ${flow} seq ${seq} redirected`);
        const out = r.dataOut!;
        t.equal(out.length, input.length + (MARKS[flow]!.phase === SHARP_PHASE_NONE ? 0 : SHARP_SHIM_LEN), 'marked frames grew by the shim');
        frames.push({ data: Buffer.from(out), comment: `sharp: program=switch port=p0 verdict=${MARKS[flow]!.phase === SHARP_PHASE_NONE ? 'forwarded' : 'marked'}` });
      }
    // a RELAY shim as the agent writes it on a rollback: byte by byte, independent of the codecs
    const relayInner = probe(5, 1n, 99n);
    const relayTag = (SHARP_PHASE_RELAY << 14) | 42;
    frames.push({ data: Buffer.concat([relayInner.subarray(0, 12), Buffer.from([0x82, 0x1c, relayTag >> 8, relayTag & 0xff]), relayInner.subarray(12)]), comment: 'sharp: program=agent verdict=relayed' });

    const w = new PcapngWriter();
    const ifc = w.addInterface({ name: 's1:p0', snapLen: 0 });
    frames.forEach((f, i) => w.addPacket({ interfaceId: ifc, timestampNs: 1_700_000_000_000_000_000n + BigInt(i) * 1000n, data: f.data, comment: f.comment }));
    const file = path.join(tmp, 'marked.pcapng');
    writeFileSync(file, w.takeChunks());

    const fields = (filter: string | undefined, ...names: string[]): string[][] => {
      const args = ['-X', `lua_script:${DISSECTOR_SOURCE}`, '-r', file, '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f', ...names.flatMap((n) => ['-e', n])];
      if (filter !== undefined) args.push('-Y', filter);
      const text = execFileSync('tshark', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return text.split('\n').filter((l) => l !== '').map((l) => l.split('|'));
    };

    const all = fields(undefined, 'frame.number', 'eth.type', 'sharp.phase', 'sharp.hid', 'sharp.inner_type', 'ip.src', 'udp.srcport', 'udp.dstport', 'sharp.probe.flow', 'sharp.probe.seq', 'sharp.probe.stamp', 'sharp.probe.tx_ns', 'frame.comment');
    t.equal(all.length, frames.length, 'tshark read every frame');
    for (let i = 0; i < 12; i++) {
      const flow = i % 4;
      const seq = Math.floor(i / 4) + 1;
      const m = MARKS[flow]!;
      const row = all[i]!;
      const marked = m.phase !== SHARP_PHASE_NONE;
      t.same(
        row,
        [
          String(i + 1),
          marked ? '0x821c' : '0x0800',
          marked ? String(m.phase) : '',
          marked ? String(m.hid) : '',
          marked ? '0x0800' : '',
          '10.0.1.1',
          String(20000 + flow),
          '9000',
          String(flow),
          String(seq),
          String(seq * 10 + flow),
          '123456789',
          frames[i]!.comment,
        ],
        `frame ${i + 1}: flow ${flow} seq ${seq} ${marked ? `shim(${m.phase}, ${m.hid})` : 'unmarked'}, inner IPv4/UDP and probe dissected`,
      );
    }
    t.same(all[12]!.slice(2, 11), ['3', '42', '0x0800', '10.0.1.1', '20005', '9000', '5', '1', '99'], 'RELAY shim: phase 3, hid 42, inner dissected');

    t.same(fields('sharp.phase == 2', 'sharp.probe.flow').map((r) => r[0]), ['1', '1', '1'], 'sharp.phase == 2 selects the POST frames only');
    t.same(fields('sharp.hid == 7', 'sharp.probe.flow').map((r) => r[0]), ['0', '1', '0', '1', '0', '1'], 'sharp.hid == 7 selects handover 7 (PRE and POST)');
    t.same(fields(`sharp.hid == ${SHARP_HID_MAX} && sharp.phase == 1`, 'sharp.probe.seq').map((r) => r[0]), ['1', '2', '3'], 'the largest hid (14 bits) and PRE');
    t.same(fields('!sharp', 'sharp.probe.flow').map((r) => r[0]), ['3', '3', '3'], '!sharp: the unmarked flow only');
    t.same(fields('sharp.phase == 3', 'sharp.hid').map((r) => r[0]), ['42'], 'RELAY');
    t.same(fields('sharp.probe.seq == 2 && udp.srcport == 20001', 'frame.number').map((r) => r[0]), ['6'], 'probe fields filterable together with the inner UDP');
    t.same(fields('frame.comment contains "verdict=relayed"', 'frame.number').map((r) => r[0]), ['13'], 'pcapng packet comments readable as frame.comment');

    const info = execFileSync('tshark', ['-X', `lua_script:${DISSECTOR_SOURCE}`, '-r', file, '-V', '-Y', 'frame.number == 2'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    t.match(info, /SHarP handover shim, POST, handover 7, inner 0x0800/, 'the tree names phase and handover');
    t.match(info, /Phase: POST \(2\)/, 'phase value string');
    t.match(info, /SHarP test probe, flow 1, seq 1, stamp 11/, 'the probe tree');
  });

  t.test('malformed shims are flagged', async (t) => {
    const inner = probe(0, 1n, 0n);
    const short = Buffer.concat([inner.subarray(0, 12), Buffer.from([0x82, 0x1c, 0x40])]);
    const hid0 = Buffer.concat([inner.subarray(0, 12), Buffer.from([0x82, 0x1c, 0x40, 0x00]), inner.subarray(12)]);
    const w = new PcapngWriter();
    const ifc = w.addInterface({ name: 'x' });
    w.addPacket({ interfaceId: ifc, timestampNs: 1n, data: short });
    w.addPacket({ interfaceId: ifc, timestampNs: 2n, data: hid0 });
    const file = path.join(tmp, 'bad.pcapng');
    writeFileSync(file, w.takeChunks());
    const text = execFileSync('tshark', ['-X', `lua_script:${DISSECTOR_SOURCE}`, '-r', file, '-T', 'fields', '-e', 'frame.number', '-e', '_ws.expert.message', '-E', 'separator=|'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const rows = text.trim().split('\n').map((l) => l.split('|'));
    t.match(rows[0]![1], /cut short/, 'a 3-byte shim is flagged');
    t.match(rows[1]![1], /Handover id 0 is invalid/, 'hid 0 is flagged');
  });

  t.test('the Lua constants equal the ABI', async (t) => {
    const lua = readFileSync(DISSECTOR_SOURCE, 'utf8');
    const c = (name: string): number => {
      const m = new RegExp(`^local ${name} = (0x[0-9A-Fa-f]+|\\d+)$`, 'm').exec(lua);
      if (m === null) throw new Error(`${name} not in sharp.lua`);
      return Number(m[1]);
    };
    t.equal(c('SHARP_ETH_P_SHIM'), SHARP_ETH_P_SHIM);
    t.equal(c('SHARP_SHIM_LEN'), SHARP_SHIM_LEN);
    t.equal(c('SHARP_TAG_HID_MASK'), SHARP_TAG_HID_MASK);
    t.equal(c('SHARP_TAG_PHASE_MASK'), 0xffff & ~SHARP_TAG_HID_MASK);
    t.equal(c('SHARP_PROBE_MAGIC'), SHARP_PROBE_MAGIC);
    t.equal(c('SHARP_PROBE_LEN'), SHARP_PROBE_LEN);
  });

  t.test('installed as a personal plugin, by the library and by sharpctl capture --install-dissector', async (t) => {
    const home = path.join(tmp, 'home');
    const r = installDissector(personalPluginDir(home));
    t.equal(r.path, path.join(home, '.local/lib/wireshark/plugins/sharp.lua'));
    t.ok(existsSync(r.path));
    // tshark loads it from there without -X
    const protos = execFileSync('tshark', ['-G', 'fields'], { encoding: 'utf8', env: { ...process.env, HOME: home }, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20 });
    t.match(protos, /\tsharp\.phase\t/, 'tshark (HOME with the plugin) knows sharp.phase');
    t.match(protos, /\tsharp\.probe\.seq\t/, 'and sharp.probe.seq');

    const dir = path.join(tmp, 'cli-plugins');
    const cli = spawnSync(process.execPath, [path.join(repoRoot, 'dist/src/cli/main.js'), 'capture', '--install-dissector', '--plugin-dir', dir, '--json'], { encoding: 'utf8' });
    t.equal(cli.status, 0, `sharpctl capture --install-dissector exits 0 (${cli.stderr})`);
    t.equal((JSON.parse(cli.stdout) as { path: string }).path, path.join(dir, 'sharp.lua'));
    t.equal(readFileSync(path.join(dir, 'sharp.lua'), 'utf8'), readFileSync(DISSECTOR_SOURCE, 'utf8'), 'the file installed is the dissector');
    const bad = spawnSync(process.execPath, [path.join(repoRoot, 'dist/src/cli/main.js'), 'capture'], { encoding: 'utf8' });
    t.equal(bad.status, 2, 'capture without an action is a usage error');
  });
}
