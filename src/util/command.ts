/** Where a command is on the PATH, or undefined when it is not there. */
import { execFileSync } from 'node:child_process';

export function commandPath(cmd: string): string | undefined {
  try {
    const out = execFileSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return out === '' ? undefined : out;
  } catch {
    return undefined;
  }
}
