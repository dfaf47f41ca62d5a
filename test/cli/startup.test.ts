// A CLI that answers at once (issue 15): `sharpctl --help` and `sharpctl
// status` load commander and the commands' definitions, not what the other
// commands run — no native addon, gRPC, protobuf, ajv, YAML, node, lab or
// deploy machinery. Seen through a module-load hook in the real CLI process
// (every ESM module it loads, every CommonJS module and addon in require's
// cache at exit); the figures themselves are in `make bench` (cli.*).
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawn } from 'node:child_process';
import { cli, fakeDaemon, reply, EMPTY_STATUS } from '../helpers/cli.js';
import { repoRoot } from '../helpers/env.js';

/** part of the lab-name rule that --help states (the schema's words) */
const LAB_NAME_RULE_HINT = 'lowercase letters or digits';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-startup-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

// the hook runs on the loader's thread: it reports each module on stderr, marked
const hook = path.join(tmp, 'hook.mjs');
writeFileSync(hook, "export async function load(url, context, next) { process.stderr.write(`\\u0000LOADED ${url}\\n`); return next(url, context); }\n");
const preload = path.join(tmp, 'preload.mjs');
writeFileSync(
  preload,
  `import { register, createRequire } from 'node:module';
register(${JSON.stringify(pathToFileURL(hook).href)});
const cache = createRequire(import.meta.url).cache;
process.on('exit', () => { for (const f of Object.keys(cache)) process.stderr.write('\\u0000LOADED ' + f + '\\n'); });
`,
);

interface Loaded {
  code: number | null;
  stdout: string;
  /** paths relative to the repository (node_modules/… or dist/…), node: builtins as they are */
  modules: string[];
}

function loadedBy(args: readonly string[], env: Record<string, string> = {}): Promise<Loaded> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--import', pathToFileURL(preload).href, cli, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('error', reject);
    c.on('close', (code) => {
      const modules = [...stderr.matchAll(/\u0000LOADED (.*)/g)].map((m) => m[1]!.replace(/^file:\/\//, '').replace(`${repoRoot}/`, '').replace(/^.*\/node_modules\//, 'node_modules/'));
      resolve({ code, stdout, modules: [...new Set(modules)] });
    });
  });
}

/** what neither --help nor status may load, each a pattern on the module's path */
const HEAVY: readonly [string, RegExp][] = [
  ['the native addon', /sharp_bpf\.node$|dist\/src\/bpf\/native\.js$/],
  ['@grpc/grpc-js', /node_modules\/@grpc\/grpc-js\//],
  ['@grpc/proto-loader', /node_modules\/@grpc\/proto-loader\//],
  ['protobufjs', /node_modules\/protobufjs\//],
  ['ajv', /node_modules\/ajv\//],
  ['yaml', /node_modules\/yaml\//],
  ['ioredis', /node_modules\/ioredis\//],
  ['the lab machinery (netns, nodes, specs)', /dist\/src\/lab\/(netns-lab|lab-nodes|open-lab|mininet-lab|spec\/index|spec\/schema)\.js$/],
  ['the node daemon and its client', /dist\/src\/node\/(?!transport\/cert-defaults)/],
  ['the deployment controller', /dist\/src\/deploy\//],
  ['the data planes', /dist\/src\/dataplane\//],
  ['the handover engine', /dist\/src\/handover\//],
];

function assertLight(t: Test, l: Loaded, what: string): void {
  // the hook works: it saw the CLI itself and commander
  t.ok(l.modules.includes('dist/src/cli/main.js'), `${what}: the hook saw dist/src/cli/main.js`);
  t.ok(l.modules.some((m) => m.startsWith('node_modules/commander/')), `${what}: the hook saw commander`);
  for (const [name, re] of HEAVY) {
    const hit = l.modules.filter((m) => re.test(m));
    t.same(hit, [], `${what} does not load ${name}`);
  }
}

t.test('--help loads only commander and the definitions, and is complete', async (t) => {
  const l = await loadedBy(['--help']);
  t.equal(l.code, 0);
  assertLight(t, l, '--help');
  for (const c of ['demo', 'compile', 'bench', 'lab', 'rule', 'handover', 'status', 'traffic', 'report', 'node', 'deploy', 'certs', 'capture']) t.match(l.stdout, new RegExp(`^  ${c}\\b`, 'm'), `lists ${c}`);
});

t.test("subcommands' help, options and examples included, loads nothing more", async (t) => {
  for (const [args, shows] of [
    [['handover', '--help'], ['--state-delay <ms>', 'Examples:']],
    [['bench', '--help'], ['buffer, rate, duration, forwarding, wildcard, soak', 'Examples:']],
    [['certs', 'init', '--help'], ['(default: 3650)', '(default: "sharp-ca")']],
    [['lab', 'up', '--help'], ['--target <target>', LAB_NAME_RULE_HINT]],
  ] as const) {
    const l = await loadedBy(args);
    t.equal(l.code, 0, `${args.join(' ')}: exit 0`);
    for (const s of shows) t.ok(l.stdout.includes(s), `${args.join(' ')} shows '${s}'`);
    assertLight(t, l, args.join(' '));
  }
});

t.test('status: a round trip to the daemon, nothing heavy loaded', async (t) => {
  const d = await fakeDaemon((req, sock) => reply(sock, req.id, EMPTY_STATUS));
  t.teardown(() => d.close());
  const l = await loadedBy(['status', '--name', d.name], d.env);
  t.equal(l.code, 0, 'status answered');
  t.match(l.stdout, 'no handover in flight', 'and printed the status');
  assertLight(t, l, 'status');
});
