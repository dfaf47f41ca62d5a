/**
 * sharpctl deploy apply|status|handover|recover: the controller over a
 * deployment spec of node daemons (local sockets or remote hosts over
 * mutual TLS). Each invocation is a controller: it recovers whatever a
 * killed one left in the journal before it starts a new handover.
 */
import type { Command } from 'commander';
import { EXIT, UsageError } from './errors.js';
import { int } from './options.js';

const SPEC_HELP = `
Deployment spec (YAML or JSON):
  controller: { name: ctl1, certs: ./certs, journal: /var/lib/sharpctl/journal }
  state: vnf-map                       # or estate, redis, copy, conntrack
  nodes:
    - { name: sw1, address: "10.9.0.2:7441" }      # mutual TLS (certs/ca.crt, controller-ctl1.crt/.key)
    - { name: vnfa, socket: /run/sharpctl/vnfa.sock }
  switches:                            # BMv2 switches this controller drives over P4Runtime
    - { name: s2, target: bmv2, p4runtime: "10.9.0.5:9559", deviceId: 1, pipeline: existing,
        ports: { s2-server: { port: 1 }, s2-vnfa: { port: 2, instance: vnfa, side: 1 } } }
                                       # pipeline: push installs p4/sharp.p4 (empties the tables): once
                                       # TCP: mutual TLS (certs/ca.crt, controller-ctl1.crt/.key; the switch's
                                       # certificate names s2: sharpctl certs switch s2 --ip 10.9.0.5);
                                       # tls: { ca, cert, key, serverName } per switch; plaintext: true (warned);
                                       # unix:/path: plaintext
  rules:
    - { switch: s1, match: { dst: 10.0.0.2/32, from: client }, to: vnfa, priority: 1 }
    - { switch: s1, flow: { src: 10.0.0.1, dst: 10.0.0.2, sport: 20000, dport: 9000, proto: udp }, to: vnfa }
`;

/** The handover ran, but --metrics-textfile could not take its figures. */
class MetricsNotRecordedError extends Error {
  override name = 'MetricsNotRecordedError';
}

type Out = (json: boolean, value: unknown, text: () => void) => void;
const out: Out = (json, value, text) => (json ? console.log(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v), 2)) : text());

async function withController<T>(file: string, fn: (c: import('../deploy/controller.js').Controller) => Promise<T>): Promise<T> {
  const { loadDeploySpec } = await import('../deploy/spec.js');
  const { openController } = await import('../deploy/controller.js');
  const c = await openController(loadDeploySpec(file));
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

export function addDeployCommands(program: Command): void {
  const deploy = program.command('deploy').description('drive a deployment of node daemons from a deployment spec (the controller)')
    .addHelpText('after', `\nExamples:\n  sharpctl deploy apply --spec deploy.yaml\n  sharpctl deploy handover 1,3 --to vnfb --spec deploy.yaml\n  sharpctl deploy recover --spec deploy.yaml\n${SPEC_HELP}`);

  deploy
    .command('apply')
    .description("install the spec's rules the switches do not hold yet")
    .requiredOption('--spec <file>', 'deployment spec')
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl deploy apply --spec deploy.yaml\n' + SPEC_HELP)
    .action(async (o: { spec: string; json: boolean }) =>
      withController(o.spec, async (c) => {
        const { loadDeploySpec } = await import('../deploy/spec.js');
        const { applyRules } = await import('../deploy/controller.js');
        const r = await applyRules(c.deployment, loadDeploySpec(o.spec).rules);
        out(o.json, r, () => console.log(`${r.added.length} rule(s) added${r.added.length ? ` (${r.added.map((x) => x.id).join(', ')})` : ''}, ${r.present.length} present already`));
      }),
    );

  deploy
    .command('status')
    .description('every node: what it runs, and the rules with their counters')
    .requiredOption('--spec <file>', 'deployment spec')
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl deploy status --spec deploy.yaml\n  sharpctl deploy status --spec deploy.yaml --json\n')
    .action(async (o: { spec: string; json: boolean }) =>
      withController(o.spec, async (c) => {
        const d = c.deployment;
        const rules = await Promise.all(d.switchControl.rules().map(async (r) => ({ ...r, counters: await d.switchControl.ruleCounters(r.id) })));
        const nodes = d.nodes.map((n) => ({ node: n.health.node, pid: n.health.pid, adopted: n.health.adopted, switches: n.switches(), instances: n.agentInstances().map((i) => i.name) }));
        // the switches this controller drives itself, over P4Runtime
        const { switchTransport } = await import('../deploy/spec.js');
        const p4runtime = c.spec.switches.map((s) => ({ switch: s.name, target: s.target, p4runtime: s.p4runtime, transport: switchTransport(c.spec.controller, s)?.kind, deviceId: s.deviceId, pipeline: s.pipeline }));
        out(o.json, { nodes, p4runtime, rules }, () => {
          for (const n of nodes) console.log(`node ${n.node} (pid ${n.pid}${n.adopted ? ', adopted' : ''}): switches ${n.switches.join(', ') || '-'}; instances ${n.instances.join(', ') || '-'}`);
          for (const s of p4runtime) console.log(`switch ${s.switch} (${s.target}, P4Runtime ${s.p4runtime}${s.transport === 'tls' ? ' mutual TLS' : s.transport === 'plaintext' ? ' PLAINTEXT' : ''} device ${s.deviceId}, pipeline ${s.pipeline})`);
          for (const r of rules) console.log(`  rule ${r.id} on ${r.switch} → ${r.action.outPort}${r.action.phase ? ` [phase ${r.action.phase} h${r.action.handoverId}]` : ''}: ${r.counters.packets} packets`);
        });
      }),
    );

  deploy
    .command('recover')
    .description('finish or roll back every handover a killed controller left in the journal')
    .requiredOption('--spec <file>', 'deployment spec')
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl deploy recover --spec deploy.yaml\n')
    .action(async (o: { spec: string; json: boolean }) =>
      withController(o.spec, async (c) => {
        const rs = await c.engine.recover();
        out(
          o.json,
          rs.map((r) => ({ id: r.id, from: r.from, to: r.to, outcome: r.outcome, reason: r.reason })),
          () => console.log(rs.length === 0 ? 'nothing to recover' : rs.map((r) => `handover ${r.id} ${r.from} → ${r.to}: ${r.outcome} (${r.reason ?? ''})`).join('\n')),
        );
        if (rs.some((r) => r.outcome === 'failed' || r.outcome === 'lossy')) process.exitCode = EXIT.FAILED;
      }),
    );

  deploy
    .command('handover')
    .description('one SHarP handover across the deployment (recovers a killed controller’s handovers first)')
    .argument('<rules>', "rule ids, comma separated, or 'all' with --from")
    .requiredOption('--spec <file>', 'deployment spec')
    .requiredOption('--to <instance>', 'the instance to move to')
    .option('--from <instance>', 'the instance to move from (default: where the first rule sends)')
    .option('--state-delay <ms>', 'injected state-transfer delay', int('--state-delay', 0, 600_000), 0)
    .option('--timeout <ms>', 'overall limit', int('--timeout', 100, 600_000))
    .option('--metrics-textfile <file.prom>', "add the handover's figures (sharp_handover_* metrics, as the lab daemon serves them) to this node_exporter textfile-collector file: cumulative over runs, replaced atomically")
    .option('--json', 'JSON output', false)
    .addHelpText('after', '\nExamples:\n  sharpctl deploy handover 1,3 --to vnfb --spec deploy.yaml\n  sharpctl deploy handover all --from vnfa --to vnfb --spec deploy.yaml --json\n  sharpctl deploy handover 1 --to vnfb --spec deploy.yaml --metrics-textfile /var/lib/node_exporter/textfile/sharp-handovers.prom\n')
    .action(async (ids: string, o: { spec: string; to: string; from?: string; stateDelay: number; timeout?: number; metricsTextfile?: string; json: boolean }) =>
      withController(o.spec, async (c) => {
        const textfile = o.metricsTextfile;
        if (textfile !== undefined) {
          if (!textfile.endsWith('.prom')) throw new UsageError(`--metrics-textfile '${textfile}': node_exporter's textfile collector reads only files named *.prom`);
          // a malformed old file, or one of other types, stops the run before the handover, not after it
          const { checkTextfile } = await import('../metrics/textfile.js');
          const { HandoverMetrics } = await import('../handover/metrics.js');
          checkTextfile(textfile, new HandoverMetrics().text());
        }
        const { rulesToMove, runHandover } = await import('../deploy/controller.js');
        const list = ids === 'all' ? ('all' as const) : ids.split(',').map((x) => Number(x));
        if (list !== 'all' && list.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError(`rules: '${ids}' is not a comma-separated list of rule ids (or 'all')`);
        for (const r of await c.engine.recover()) process.stderr.write(`recovered handover ${r.id} ${r.from} → ${r.to}: ${r.outcome} (${r.reason ?? ''})\n`);
        const t0 = Date.now();
        let r: Awaited<ReturnType<typeof runHandover>>;
        try {
          const { rules, from } = rulesToMove(c.deployment, list, o.from);
          r = await runHandover(c, {
            rules,
            from,
            to: o.to,
            stateDelayMs: o.stateDelay,
            ...(o.timeout === undefined ? {} : { timeoutMs: o.timeout }),
            onEvent: (e) => {
              if (!o.json) process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(2).padStart(6)}s] ${e.step}${e.detail ? `: ${e.detail}` : ''}\n`);
            },
          });
        } catch (e) {
          // refused before anything changed: counted too, by its reason (a file that cannot take it does not hide the refusal)
          if (textfile !== undefined) {
            const { HandoverMetrics } = await import('../handover/metrics.js');
            const { mergeIntoTextfile } = await import('../metrics/textfile.js');
            const m = new HandoverMetrics();
            m.refused(e);
            try {
              mergeIntoTextfile(textfile, m.text());
            } catch (w) {
              process.stderr.write(`sharpctl: warning: the refusal is not in ${textfile}: ${(w as Error).message}\n`);
            }
          }
          throw e;
        }
        const summary = { id: r.id, from: r.from, to: r.to, rules: r.rules, outcome: r.outcome, reason: r.reason, durationMs: +r.durationMs.toFixed(2), stateMs: +r.stateMs.toFixed(2), counts: r.counts };
        out(o.json, summary, () => console.log(`handover ${r.id} ${r.from} → ${r.to}: ${r.outcome} in ${r.durationMs.toFixed(1)} ms${r.reason ? ` (${r.reason})` : ''}`));
        if (textfile !== undefined) {
          const { HandoverMetrics } = await import('../handover/metrics.js');
          const { mergeIntoTextfile } = await import('../metrics/textfile.js');
          const m = new HandoverMetrics();
          m.observe(r, { backend: c.spec.state });
          try {
            mergeIntoTextfile(textfile, m.text());
          } catch (e) {
            // not a usage error any more: the handover ran (exit 1)
            throw new MetricsNotRecordedError(`handover ${r.id} ended ${r.outcome}, but its figures are not in ${textfile}: ${(e as Error).message}`, { cause: e });
          }
        }
        if (r.outcome !== 'completed') process.exitCode = EXIT.FAILED;
      }),
    );
}
