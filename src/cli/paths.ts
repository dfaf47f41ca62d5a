/** Where things are: the repository (objects, sources) and the run directory. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** repository root (this file is dist/src/cli/paths.js) */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const objectsDir = path.join(repoRoot, 'build/ebpf');
/** long-lived state shared by separate CLI invocations */
export const runDir = process.env['SHARPCTL_RUN_DIR'] ?? '/run/sharpctl';
