/**
 * sharpctl capture: seeing what the data plane does.
 *   capture [--lab NAME | --spec FILE | --socket PATH] -w FILE [filters]   frames as the switch
 *       and agent programs decide on them, into pcapng (the node's Capture rpc)
 *   capture --install-dissector [--plugin-dir dir]   the Wireshark Lua dissector
 *                                                    into ~/.local/lib/wireshark/plugins
 */
import { Option, type Command } from 'commander';
import path from 'node:path';
import { DissectorInstallError, installDissector, personalPluginDir } from '../wireshark/install.js';
import { EnvironmentError, LabError, UsageError, requireRoot } from './errors.js';
import { int, labName, LAB_NAME_HELP, seconds } from './options.js';
import { interruption, tidying } from './interrupt.js';
import { runDir } from './paths.js';

interface CaptureOptions {
  installDissector?: boolean;
  pluginDir?: string;
  json?: boolean;
  lab?: string;
  spec?: string;
  socket?: string;
  write?: string;
  port?: string;
  direction?: 'in' | 'out';
  flow?: string;
  rule?: number;
  handover?: number;
  snaplen: number;
  count?: number;
  duration?: number;
}

const EXAMPLES = `
Examples:
  sharpctl capture -w handover.pcapng --duration 10            # the default lab, every program, 10 s
  sharpctl capture --lab lab2 -w h3.pcapng --handover 3         # only frames of handover 3
  sharpctl capture -w vnf1.pcapng --port s1-vnf1 --direction out --count 1000
  sharpctl capture -w f.pcapng --flow '10.0.1.1:20000>10.0.2.1:9000/udp' --snaplen 128
  sharpctl capture --spec deploy.yaml -w all.pcapng --rule 1   # the nodes of a deployment spec
  sharpctl capture --socket /run/sharpctl/vnfa.sock -w a.pcapng --json
  sharpctl capture --install-dissector
  tshark -r handover.pcapng -Y "sharp.phase == 2" -T fields -e frame.comment -e sharp.hid -e sharp.probe.seq

Each frame is recorded once, where its program decided on it: a switch
records a forwarded frame on the port it leaves by (direction out, with the
shim as on the wire; in=<port> in its comment says where it came from), a
dropped or passed frame on the port it arrived on (in); an agent records
what arrives on its interfaces (in: to-vnf, held in ring N, dropped) and what
it releases from a ring (out: released, relayed). --port matches a frame's
own port and, for switch records, the port it came in by. The pcapng has an
interface per node:port:direction; each packet's comment names the program,
verdict, reason, handover, rule and ring position (frame.comment in tshark).
Records the capture ring had no room for are counted (ringFull), never the
frames: capture never holds the data path back. On a BMv2 lab only the agents
capture (the P4 switch has no hook).`;

export function addCaptureCommands(program: Command): void {
  program
    .command('capture')
    .description('capture frames as the switch and agent programs decide on them, into pcapng; install the Wireshark dissector')
    .option('--lab <name>', `capture on this lab's nodes (default: the lab 'default'); ${LAB_NAME_HELP}`, labName)
    .option('--spec <file>', 'capture on the nodes of this deployment spec')
    .option('--socket <path>', "capture on the node serving this Unix socket")
    .option('-w, --write <file>', 'the pcapng file to write')
    .option('--port <name>', 'frames on this switch port or instance interface')
    .addOption(new Option('--direction <dir>', 'in: frames recorded where they arrived; out: where they left').choices(['in', 'out']))
    .option('--flow <5-tuple>', "frames of this flow, either way round: SRC[:SPORT]>DST[:DPORT][/PROTO], '*' for any")
    .option('--rule <id>', 'frames the switch matched to this rule', int('--rule', 1, 0xffffffff))
    .option('--handover <id>', 'frames of this handover', int('--handover', 1, 16383))
    .option('--snaplen <bytes>', 'bytes kept of each frame', int('--snaplen', 1, 1540), 256)
    .option('--count <n>', 'stop after this many frames', int('--count', 1, 100_000_000))
    .option('--duration <s>', 'stop after this many seconds', seconds('--duration', 86_400))
    .option('--install-dissector', `install the SHarP Lua dissector (shim + probe) into Wireshark's personal plugin folder (${personalPluginDir()})`)
    .option('--plugin-dir <dir>', 'install into this folder instead')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', EXAMPLES)
    .action(async (o: CaptureOptions) => {
      if (o.installDissector === true) return installTheDissector(o);
      if (o.write === undefined) throw new UsageError('capture: give -w <file.pcapng> (or --install-dissector)');
      if ([o.lab, o.spec, o.socket].filter((x) => x !== undefined).length > 1) throw new UsageError('capture: give one of --lab, --spec, --socket');
      const { checkCaptureRequest, parseFlowFilter, CaptureRequestError } = await import('../capture/filter.js');
      let request;
      try {
        request = checkCaptureRequest({
          ...(o.port === undefined ? {} : { port: o.port }),
          ...(o.direction === undefined ? {} : { direction: o.direction }),
          ...(o.flow === undefined ? {} : { flow: parseFlowFilter(o.flow) }),
          ...(o.rule === undefined ? {} : { rule: o.rule }),
          ...(o.handover === undefined ? {} : { handover: o.handover }),
          snaplen: o.snaplen,
          count: o.count ?? 0,
          durationMs: o.duration === undefined ? 0 : Math.ceil(o.duration * 1000),
        });
      } catch (e) {
        if (e instanceof CaptureRequestError) throw new UsageError(e.message, { cause: e });
        throw e;
      }
      const { runCapture, connectNodeSockets, CaptureNodeError, BMV2_CAPTURE_UNSUPPORTED, BMV2_CAPTURE_AGENTS_ONLY, CaptureUnsupportedError } = await import('../capture/run.js');
      const clients = await (async () => {
        if (o.spec !== undefined) {
          const { loadDeploySpec } = await import('../deploy/spec.js');
          const { connectDeployment } = await import('../deploy/controller.js');
          return (await connectDeployment(loadDeploySpec(o.spec))).nodes;
        }
        if (o.socket !== undefined) return connectNodeSockets([{ name: path.basename(o.socket, '.sock'), socket: o.socket }]);
        const name = o.lab ?? 'default';
        requireRoot('sharpctl capture --lab', "a lab's node sockets are root's");
        const { labPaths, readState, daemonAlive } = await import('../lab/run-dir.js');
        const { labNodeSockets } = await import('../lab/lab-nodes.js');
        const p = labPaths(runDir, name);
        const st = readState(p);
        if (st === undefined || !daemonAlive(st)) throw new LabError(`lab '${name}' is not up (sharpctl lab up${name === 'default' ? '' : ` --name ${name}`})`);
        const sockets = labNodeSockets(path.join(p.dir, 'work', 'nodes'));
        if (st.target === 'bmv2') {
          // the agents run on nodes (the default): they capture; in the lab's own process nothing can
          if (sockets.length === 0) throw new EnvironmentError(BMV2_CAPTURE_UNSUPPORTED, { cause: new CaptureUnsupportedError(BMV2_CAPTURE_UNSUPPORTED) });
          if (o.json !== true || process.env['SHARPCTL_PROGRESS'] === '1') process.stderr.write(`capture: ${BMV2_CAPTURE_AGENTS_ONLY}\n`);
        }
        if (sockets.length === 0) throw new LabError(`lab '${name}' runs no node processes to capture on (it is ${st.status})`);
        return connectNodeSockets(sockets);
      })();
      const json = o.json === true;
      const say = (line: string): void => {
        if (!json || process.env['SHARPCTL_PROGRESS'] === '1') process.stderr.write(`capture: ${line}\n`);
      };
      try {
        // Ctrl-C ends the capture: the file is closed complete and the summary printed, then exit 130
        const s = await tidying('closing the capture file', () => runCapture(clients, request, { file: o.write!, signal: interruption, progress: say }));
        if (json) console.log(JSON.stringify(s, null, 2));
        else {
          console.log(`${s.frames} frames written to ${s.file} (${s.stoppedBy === 'interrupt' ? 'interrupted' : `stopped by ${s.stoppedBy}`})`);
          console.log(`  verdicts: ${Object.entries(s.verdicts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);
          console.log(`  records lost to a full capture ring: ${s.ringFull}; frames the filters left out: ${s.filtered}`);
          console.log(`  interfaces: ${s.interfaces.join(', ') || 'none'}`);
        }
      } catch (e) {
        if (e instanceof CaptureNodeError) throw new UsageError(e.message, { cause: e });
        const err = e as { code?: number; name?: string };
        // the node refused the request (bad argument, no such port, a capture running already)
        if (err.name === 'NodeCallError' && (err.code === 3 || err.code === 5 || err.code === 9)) throw new UsageError((e as Error).message, { cause: e });
        throw e;
      } finally {
        for (const c of clients) c.close();
      }
    });
}

function installTheDissector(o: CaptureOptions): void {
  let r;
  try {
    r = installDissector(o.pluginDir ?? personalPluginDir());
  } catch (e) {
    if (e instanceof DissectorInstallError) throw new UsageError(e.message, { cause: e });
    throw e;
  }
  if (o.json) console.log(JSON.stringify(r, null, 2));
  else console.log(`installed ${r.path} (${r.bytes} bytes); Wireshark and tshark load it at their next start`);
}
