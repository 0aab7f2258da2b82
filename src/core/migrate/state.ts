/** vmctl's client-side state of a VM (login key, pinned host key) follows it to its new host. */
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ensurePrivateDir, vmStateDir } from '../paths.js';
import { KNOWN_HOSTS_FILE } from '../guest/state-files.js';

/** Move (or with keep, copy) the state dir from the source connection's to the destination's; re-pin a new forward port. Returns the new dir, or null when there was none. */
export function moveVmState(fromUri: string, toUri: string, name: string, o: { keep?: boolean; sshPort?: { from: number; to: number } } = {}): string | null {
  const from = vmStateDir(fromUri, name);
  const to = vmStateDir(toUri, name);
  if (!existsSync(from) || from === to) return existsSync(to) ? to : null;
  ensurePrivateDir(dirname(to));
  rmSync(to, { recursive: true, force: true });
  cpSync(from, to, { recursive: true, preserveTimestamps: true });
  if (o.sshPort) {
    const kh = join(to, KNOWN_HOSTS_FILE);
    if (existsSync(kh)) {
      const text = readFileSync(kh, 'utf8').split(`[127.0.0.1]:${o.sshPort.from} `).join(`[127.0.0.1]:${o.sshPort.to} `);
      writeFileSync(kh, text, { mode: 0o600 });
    }
  }
  if (!o.keep) rmSync(from, { recursive: true, force: true });
  return to;
}
