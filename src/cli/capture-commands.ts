/**
 * sharpctl capture: seeing what the data plane does.
 *   capture --install-dissector [--plugin-dir dir]   the Wireshark Lua dissector
 *                                                    into ~/.local/lib/wireshark/plugins
 */
import type { Command } from 'commander';
import { DissectorInstallError, installDissector, personalPluginDir } from '../wireshark/install.js';

function usage(message: string, cause?: unknown): Error {
  const e = new Error(message, { cause });
  e.name = 'UsageError';
  return e;
}

export function addCaptureCommands(program: Command): void {
  program
    .command('capture')
    .description('capture what the switch and agent programs see; install the Wireshark dissector')
    .option('--install-dissector', `install the SHarP Lua dissector (shim + probe) into Wireshark's personal plugin folder (${personalPluginDir()})`)
    .option('--plugin-dir <dir>', 'install into this folder instead')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  sharpctl capture --install-dissector\n  tshark -r capture.pcapng -Y "sharp.phase == 2" -T fields -e sharp.hid -e sharp.probe.seq')
    .action((o: { installDissector?: boolean; pluginDir?: string; json?: boolean }) => {
      if (o.installDissector !== true) throw usage('capture: give --install-dissector (live capture is not there yet)');
      let r;
      try {
        r = installDissector(o.pluginDir ?? personalPluginDir());
      } catch (e) {
        if (e instanceof DissectorInstallError) throw usage(e.message, e);
        throw e;
      }
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else console.log(`installed ${r.path} (${r.bytes} bytes); Wireshark and tshark load it at their next start`);
    });
}
