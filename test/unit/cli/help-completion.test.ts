/**
 * --help layout and shell completion, through the built binary (no daemon).
 * Help: the words at 80 columns are exactly the words at 200 columns (so no
 * word, flag names included, is ever split across lines) and no line is wider
 * than the width. Completion: the script is printed, and bash itself,
 * sourcing it, completes `vmctl te` to `template`.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_HELP_WIDTH, helpWidth } from '../../../src/cli/main.js';
import { repoRoot } from '../../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../../_helpers/vmctl.js';

const COMMANDS = [
  [],
  ['create'],
  ['start'],
  ['stop'],
  ['delete'],
  ['ssh'],
  ['console'],
  ['events'],
  ['image'],
  ['image', 'import'],
  ['image', 'build'],
  ['host', 'check'],
  ['doctor'],
  ['template'],
  ['template', 'show'],
];

const words = (text: string) => text.split(/\s+/).filter((w) => w !== '');

describe('helpWidth', () => {
  it("the terminal's width on a TTY, else $COLUMNS, else 100; never below 40", () => {
    expect(helpWidth({ isTTY: true, columns: 80 }, { COLUMNS: '200' })).toBe(80);
    expect(helpWidth({ isTTY: true, columns: 237 }, {})).toBe(237);
    expect(helpWidth({ isTTY: false }, { COLUMNS: '200' })).toBe(200);
    expect(helpWidth({ isTTY: false }, {})).toBe(DEFAULT_HELP_WIDTH);
    expect(DEFAULT_HELP_WIDTH).toBe(100);
    expect(helpWidth({ isTTY: false }, { COLUMNS: 'wide' })).toBe(100);
    expect(helpWidth({ isTTY: false }, { COLUMNS: '12' })).toBe(40);
  });
});

describe('vmctl --help', () => {
  it.each(COMMANDS.map((c) => [c.join(' ') || '(top level)', c] as const))('%s: wraps at 80 and 200 columns without splitting a word or flag', async (_label, cmd) => {
    const at = async (columns: number) => {
      const r = await vmctl([...cmd, '--help'], { env: { COLUMNS: String(columns) } });
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      return r.stdout;
    };
    const [narrow, wide] = [await at(80), await at(200)];
    for (const [text, width] of [[narrow, 80], [wide, 200]] as const) {
      const tooLong = text.split('\n').filter((l) => l.length > width);
      expect(tooLong).toEqual([]);
    }
    // the narrow text did wrap (else this proves nothing) …
    expect(narrow.split('\n').length).toBeGreaterThan(wide.split('\n').length);
    // … and only between words: every word, every `--flag`, is whole
    expect(words(narrow)).toEqual(words(wide));
    for (const flag of wide.match(/--[a-z][a-z0-9-]*/g) ?? []) expect(narrow).toContain(flag);
    expect(narrow).not.toMatch(/(^|\s)-\n\s*-[a-z]/);
  });

  it('a reported case: `stop --help` at 80 columns keeps --timeout and qemu:///system whole', async () => {
    const r = await vmctl(['stop', '--help'], { env: { COLUMNS: '80' } });
    expect(r.stdout).toMatch(/^ {6}--timeout +seconds to wait/m);
    expect(r.stdout).toContain('qemu:///system');
  });
});

describe('vmctl completion', () => {
  const tmpRoots: string[] = [];
  afterAll(() => {
    for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
  });

  it('prints a bash completion script (zsh when $SHELL is zsh)', async () => {
    const bash = await vmctl(['completion'], { env: { SHELL: '/bin/bash' } });
    expect(bash.code).toBe(0);
    expect(bash.stdout).toContain('###-begin-vmctl-completions-###');
    expect(bash.stdout).toContain('complete -o bashdefault -o default -F _vmctl_yargs_completions vmctl');
    const zsh = await vmctl(['completion'], { env: { SHELL: '/usr/bin/zsh' } });
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/^#compdef vmctl\n/);
    expect(zsh.stdout).toContain('compdef _vmctl_yargs_completions vmctl');
  });

  it('--get-yargs-completions: `vmctl te` suggests template; `vmctl template ` its subcommands', async () => {
    const top = await vmctl(['--get-yargs-completions', 'vmctl', 'te'], { env: { SHELL: '/bin/bash' } });
    expect(top.code).toBe(0);
    expect(top.stdout.split('\n')).toContain('template');
    const sub = await vmctl(['--get-yargs-completions', 'vmctl', 'template', ''], { env: { SHELL: '/bin/bash' } });
    expect(sub.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('-'))).toEqual(['list', 'show']);
  });

  it('bash, sourcing the script, completes `vmctl te` to `template`', async () => {
    ensureBuilt();
    const script = (await vmctl(['completion'], { env: { SHELL: '/bin/bash' } })).stdout;
    const bin = mkdtempSync(path.join(tmpdir(), 'vmctl-completion-'));
    tmpRoots.push(bin);
    // the script runs `vmctl` from PATH
    writeFileSync(path.join(bin, 'vmctl'), `#!/bin/sh\nexec "${process.execPath}" "${path.join(repoRoot, 'bin', 'vmctl.js')}" "$@"\n`);
    chmodSync(path.join(bin, 'vmctl'), 0o755);
    writeFileSync(path.join(bin, 'completion.bash'), script);
    const complete = (line: string) =>
      execFileSync(
        'bash',
        ['-c', `source "$1"; COMP_WORDS=(${line}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); _vmctl_yargs_completions; printf '%s\\n' "\${COMPREPLY[@]}"`, 'bash', path.join(bin, 'completion.bash')],
        { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, SHELL: '/bin/bash' } },
      )
        .split('\n')
        .filter((l) => l !== '');
    expect(complete('vmctl te')).toEqual(['template']);
    expect(complete('vmctl template s')).toEqual(['show']);
  });
});

describe('vmctl --version', () => {
  it("prints the client's version without a daemon (-V too, --json as JSON), anywhere before --, exit 0", async () => {
    const version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    // no daemon is asked: an unreachable URI changes nothing
    const env = { LIBVIRT_DEFAULT_URI: 'qemu+tcp://127.0.0.1:1/system' };
    for (const args of [['--version'], ['-V'], ['list', '--version']]) {
      const r = await vmctl(args, { env });
      expect([r.code, r.stdout, r.stderr], args.join(' ')).toEqual([0, `vmctl ${version}\n`, '']);
    }
    const j = await vmctl(['--version', '--json'], { env });
    expect(JSON.parse(j.stdout)).toEqual({ vmctl: version });
    // after --, it is the guest command's: vmctl ssh x -- --version looks for VM x
    const ssh = await vmctl(['ssh', 'x', '--', '--version'], { env });
    expect(ssh.code).not.toBe(0);
    expect(ssh.stdout).not.toContain('vmctl ');
  });
});
