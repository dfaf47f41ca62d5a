// A node process for the pin tests: loads a switch + agents with pinning
// (or adopts them), installs rules, reports what it did as one JSON line on
// stdout, then waits to be killed (SIGKILL: no exit handler runs).
import { XdpDataPlane } from '../../src/dataplane/xdp/xdp-dataplane.js';
import type { XdpTopology } from '../../src/dataplane/xdp/topology.js';
import { installRules } from '../../src/lab/netns-lab.js';
import type { RuleSpec } from '../../src/lab/spec/types.js';
import { PinStore } from '../../src/node/pins.js';

interface LoaderArgs {
  node: string;
  objectsDir: string;
  topology: XdpTopology;
  rules: RuleSpec[];
  adopt?: boolean;
  /** exit normally once ready (process 'exit' handlers run: they must leave pinned objects alone) */
  exit?: boolean;
}

const args = JSON.parse(process.argv[2] ?? '{}') as LoaderArgs;
const store = PinStore.open({ node: args.node });
const dp = args.adopt ? await XdpDataPlane.adopt({ pins: { store } }) : await XdpDataPlane.create(args.topology, { objectsDir: args.objectsDir, pins: { store } });
if (!args.adopt) await installRules(dp, args.rules);
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, pinDir: store.pinDir, location: store.location, rules: dp.rules() })}\n`);
if (args.exit) process.exit(0);
setInterval(() => undefined, 1 << 30);
