/**
 * Installs the Lua dissector (src/wireshark/sharp.lua) as a personal
 * Wireshark plugin: ~/.local/lib/wireshark/plugins/sharp.lua, where
 * Wireshark >= 2.6 and tshark look for plugins of the user.
 */
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** the dissector's source in the repository (this file is dist/src/wireshark/install.js) */
export const DISSECTOR_SOURCE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src/wireshark/sharp.lua');

export class DissectorInstallError extends Error {
  override name = 'DissectorInstallError';
}

/** Wireshark's personal plugin folder of `home` (default: the user's home). */
export function personalPluginDir(home = os.homedir()): string {
  return path.join(home, '.local/lib/wireshark/plugins');
}

export interface InstalledDissector {
  source: string;
  path: string;
  bytes: number;
}

/** Copies sharp.lua into `dir` (created if missing); returns where it went. */
export function installDissector(dir = personalPluginDir()): InstalledDissector {
  let bytes: number;
  try {
    bytes = statSync(DISSECTOR_SOURCE).size;
  } catch (e) {
    throw new DissectorInstallError(`the dissector source ${DISSECTOR_SOURCE} is missing (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
  const target = path.join(dir, 'sharp.lua');
  try {
    mkdirSync(dir, { recursive: true });
    copyFileSync(DISSECTOR_SOURCE, target);
  } catch (e) {
    throw new DissectorInstallError(`cannot install the dissector into ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  return { source: DISSECTOR_SOURCE, path: target, bytes };
}

/** The dissector's text (for tests and `--print-dissector`). */
export function dissectorText(): string {
  return readFileSync(DISSECTOR_SOURCE, 'utf8');
}
