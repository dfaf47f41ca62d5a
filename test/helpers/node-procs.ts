/** Stopping node daemon processes a test started, and removing what they attached and pinned. */
import { detachLabNode, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { sleep } from '../../src/util/mutex.js';

/** SIGTERM to each running process (5 s each at most), then `sharpctl node detach` of every node inside its namespace. */
export async function stopAndDetachNodes(procs: Iterable<NodeProcess>, nodes: readonly LabNode[], cli: string): Promise<void> {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      const exited = new Promise((r) => p.child.once('exit', r));
      p.child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
  }
  // what the nodes pinned goes with them: the interfaces as they were found
  for (const n of nodes) {
    const err = detachLabNode(n, cli);
    if (err !== undefined) console.error(`# detach of ${n.config.name} failed: ${err}`);
  }
}
