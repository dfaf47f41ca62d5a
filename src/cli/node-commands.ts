/**
 * sharpctl node run|status|detach: the per-host node daemon and what an
 * operator does with it.
 */
import { Command, Option } from './commander.js';
import { objectsDir } from './paths.js';
import { requireRoot as requireRootFor } from './errors.js';
import { ownSignals } from './interrupt.js';

const requireRoot = (what: string): void => requireRootFor(what, 'it attaches XDP programs and pins them in bpffs');

const EXAMPLES_RUN = `
Examples:
  sharpctl node run --config /etc/sharpctl/node-s1.yaml   # on the switch host: the XDP switch on its NICs
  sharpctl node run --config node-s1.yaml --replace       # take over interfaces that run someone else's XDP program
  # a restarted node re-adopts its pinned programs: traffic never stopped

Config (YAML or JSON):
  name: s1
  listen: { unix: /run/sharpctl/node-s1.sock, tcp: "10.9.0.2:7441" }
  tls: { ca: certs/ca.crt, cert: certs/node-s1.crt, key: certs/node-s1.key, allow: [ctl1] }
  switches:
    - name: s1
      ports:
        - { name: s1-client, ifname: enp1s0, role: host }
        - { name: s1-vnf1, ifname: enp2s0, role: vnf, instance: vnf1, side: 0 }
  instances:                      # on a VNF host instead
    - { name: vnf1, kind: counter, ifaces: [eth0, eth1], ringCapacity: 8192 }
`;

export function addNodeCommands(program: Command): void {
  const node = program
    .command('node')
    .description('the node daemon: the only sharpctl process that touches BPF on a host')
    .addHelpText(
      'after',
      '\nExamples:\n  sharpctl node run --config /etc/sharpctl/node-s1.yaml\n  sharpctl node status --socket /run/sharpctl/node-s1.sock\n  sharpctl node detach --config /etc/sharpctl/node-s1.yaml',
    );

  node
    .command('run')
    .description('load (or re-adopt) the switch and agent programs the config names and serve the node API (sharp.node.v1) until SIGTERM; the data plane stays when it stops')
    .requiredOption('--config <file>', 'node config (YAML or JSON)')
    .option('--replace', 'replace an XDP program this node did not attach (default: refuse, naming it)', false)
    .option('--json', 'one JSON line when ready, then log lines as JSON', false)
    .addHelpText('after', EXAMPLES_RUN)
    .action(async (o: { config: string; replace: boolean; json: boolean }) => {
      requireRoot('sharpctl node run');
      const { loadNodeConfig } = await import('../node/config.js');
      const { startNode } = await import('../node/daemon.js');
      const config = loadNodeConfig(o.config);
      // the node outlives whoever reads its output (a lab daemon killed with -9): a write to a pipe nobody reads any more is lost, not the node's end
      for (const stream of [process.stdout, process.stderr])
        stream.on('error', (e: NodeJS.ErrnoException) => {
          if (e.code !== 'EPIPE') throw e;
        });
      const log = (line: string): void => void process.stderr.write(o.json ? `${JSON.stringify({ node: config.name, log: line })}\n` : `node ${config.name}: ${line}\n`);
      const n = await startNode(config, { objectsDir, replace: o.replace, log });
      const ready = { ready: true, node: config.name, pid: process.pid, adopted: n.adopted, unix: n.server.unixPath ?? null, tcp: n.server.tcpAddress ?? null, frames: n.server.framesUnixPath === undefined && n.server.framesTcpPort === undefined ? null : { unix: n.server.framesUnixPath ?? null, tcpPort: n.server.framesTcpPort ?? null }, metrics: n.metrics === undefined ? null : { unix: n.metrics.unixPath ?? null, tcp: n.metrics.tcpAddress ?? null } };
      process.stdout.write(o.json ? `${JSON.stringify(ready)}\n` : `node ${config.name} ready (pid ${process.pid}${n.adopted ? ', adopted its pinned data plane' : ''})\n`);
      ownSignals();
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          log(`${sig}: stopping; the data plane stays pinned (sharpctl node detach removes it)`);
          void n.stop().then(resolve, resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });

  node
    .command('detach')
    .description("remove everything the node attached and pinned (the node must be stopped): its interfaces are left as it found them")
    .requiredOption('--config <file>', 'node config (YAML or JSON)')
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl node detach --config /etc/sharpctl/node-s1.yaml\n')
    .action(async (o: { config: string; json: boolean }) => {
      requireRoot('sharpctl node detach');
      const { loadNodeConfig } = await import('../node/config.js');
      const { pinStoreOf } = await import('../node/daemon.js');
      const config = loadNodeConfig(o.config);
      if (config.listen.unix !== undefined && (await answers(config.listen.unix))) {
        const e = new Error(`node ${config.name} is running (it answers on ${config.listen.unix}): stop it first (SIGTERM), then detach`);
        throw e;
      }
      const report = pinStoreOf(config).detach();
      if (o.json) console.log(JSON.stringify({ node: config.name, ...report }));
      else console.log(`node ${config.name}: detached ${report.links} link(s), removed ${report.pins} pin(s) and ${report.interfaces} interface(s)`);
    });

  node
    .command('status')
    .description('ask a node what it runs (Health) and which rules it holds')
    .addOption(new Option('--socket <path>', "the node's Unix socket").conflicts('address'))
    .option('--address <host:port>', 'the node over TCP (mutual TLS)')
    .option('--node <name>', "the node's name (its certificate must name it)")
    .option('--certs <dir>', 'folder with ca.crt and controller-<name>.crt/.key', 'certs')
    .option('--controller <name>', 'this controller’s certificate name', 'controller')
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl node status --socket /run/sharpctl/node-s1.sock\n  sharpctl node status --address 10.9.0.2:7441 --node s1 --certs ./certs --controller ctl1\n')
    .action(async (o: { socket?: string; address?: string; node?: string; certs: string; controller: string; json: boolean }) => {
      const { NodeClient } = await import('../node/client.js');
      const t = await import('../node/transport/index.js');
      let channel;
      if (o.socket !== undefined) channel = t.nodeChannel(t.unixEndpoint(o.socket, o.node));
      else if (o.address !== undefined) {
        if (o.node === undefined) throw Object.assign(new Error('--address needs --node: the name its certificate must carry'), { name: 'UsageError' });
        channel = t.nodeChannel(t.tlsEndpoint(o.node, o.address, t.loadTls(t.controllerTlsFiles(o.certs, o.controller), 'client')));
      } else throw Object.assign(new Error('give --socket or --address'), { name: 'UsageError' });
      const c = await NodeClient.connect({ channel, callTimeoutMs: 5000 });
      try {
        // Health once more, now on the framed channel where the node offers one: the line below says whether calls get there
        await c.refresh();
        const h = c.health;
        const transport = { calls: c.transport, ...(c.transportNote === undefined ? {} : { note: c.transportNote }) };
        if (o.json) console.log(JSON.stringify({ health: h, rules: c.rules(), transport }, null, 2));
        else {
          console.log(`node ${h.node} (${h.api}, sharpctl ${h.version}, pid ${h.pid}${h.adopted ? ', adopted' : ''})`);
          const where = [h.frames?.unix && `unix:${h.frames.unix}`, h.frames?.port && `tcp port ${h.frames.port}`].filter(Boolean).join(', ');
          console.log(`  calls: ${c.transport === 'frames' ? `framed channel (${where})` : `gRPC (${c.transportNote ?? 'no framed channel'})`}`);
          for (const s of h.switches) console.log(`  switch ${s.name}: ${s.ports.map((p) => `${p.name}=${p.ifname}`).join(' ')}`);
          for (const i of h.instances) console.log(`  instance ${i.name} (${i.kind}) on ${i.ifaces.join(', ')}, ring ${i.ringCount}×${i.ringCapacity}`);
          for (const r of c.rules()) console.log(`  rule ${r.id} on ${r.switch} → ${r.action.outPort}${r.action.phase ? ` [phase ${r.action.phase} h${r.action.handoverId}]` : ''}`);
        }
      } finally {
        c.close();
      }
    });
}

/** Whether something answers on a Unix socket. */
async function answers(socket: string): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createConnection(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
