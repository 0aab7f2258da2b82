/** Lab files: schema and cross-field problems name the file and JSON path; the plan's names, addresses and start levels. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkLabText, shippedLabs, loadLab } from '../../../src/core/lab/load.js';
import { labVmCreateInput, planLab } from '../../../src/core/lab/plan.js';
import { repoRoot } from '../../_helpers/rig.js';

const problems = (text: string) => {
  const r = checkLabText(text, 'lab.yaml');
  if (r.ok) throw new Error('expected problems');
  return r.problems.map((p) => `${p.source}: ${p.path}: ${p.message}`);
};

describe('lab files', () => {
  it('the test fixtures and every shipped lab validate', () => {
    for (const f of ['trio', 'solo']) {
      const r = checkLabText(readFileSync(join(repoRoot, `test/fixtures/labs/${f}.yaml`), 'utf8'), f);
      expect(r.ok, JSON.stringify(!r.ok && r.problems)).toBe(true);
    }
    for (const name of shippedLabs()) expect(() => loadLab(name), name).not.toThrow();
  });

  it('schema problems name the JSON path', () => {
    expect(problems('name: Bad\nvms: [{name: a}]\n')).toEqual([expect.stringMatching(/^lab.yaml: \/name: must be a lab name/)]);
    expect(problems('name: l\nvms: [{name: a, colour: red}]\n')).toEqual([expect.stringMatching(/\/vms\/0\/colour: unknown field \(allowed: name, template/)]);
    expect(problems('name: l\nnetworks: [{name: n, subnet: 10.0.0.0/8}]\nvms: [{name: a}]\n')[0]).toMatch(/\/networks\/0\/subnet: must be an IPv4 subnet/);
  });

  it('cross-field rules: unknown networks, after targets, cycles, addresses, limits, checks', () => {
    const p = problems(
      [
        'name: l',
        'limits: {vms: 2}',
        'networks: [{name: n, subnet: 10.5.0.0/24}]',
        'vms:',
        '  - {name: a, after: [b], networks: [{network: n, address: 10.6.0.9}]}',
        '  - {name: b, after: [a], networks: [m]}',
        '  - {name: c, count: 2}',
        'exercises:',
        '  - {id: e, title: t, checks: [{name: x, on: zed, run: "true"}, {name: y, on: a, run: "true", output: "("}]}',
      ].join('\n'),
    );
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/\/vms\/0\/networks\/0\/address: 10.6.0.9 is not a host address in 10.5.0.0\/24/),
        expect.stringMatching(/\/vms\/1\/networks\/0: 'm' is not a network of this lab/),
        expect.stringMatching(/start order cycle: a → b → a/),
        expect.stringMatching(/\/vms: the lab has 4 VMs, its limit is 2/),
        expect.stringMatching(/\/exercises\/0\/checks\/0\/on: 'zed' is not a VM of this lab/),
        expect.stringMatching(/\/exercises\/0\/checks\/1\/output: not a regular expression/),
      ]),
    );
  });

  it('YAML syntax errors give line and column', () => {
    const r = checkLabText('name: l\nvms: [\n', 'x.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems[0]).toMatchObject({ source: 'x.yaml', rule: 'yaml' });
  });
});

describe('lab plan', () => {
  const spec = () => {
    const r = checkLabText(readFileSync(join(repoRoot, 'test/fixtures/labs/trio.yaml'), 'utf8'), 'trio');
    if (!r.ok) throw new Error('fixture');
    return r.spec;
  };

  it('names per prefix, fixed and allocated addresses, start levels', () => {
    const plan = planLab(spec(), 'ann', { memoryOf: () => 384 });
    expect(plan.id).toBe('ann-trio');
    expect(plan.networks.map((n) => n.name)).toEqual(['vmctl-ann-trio-inner', 'vmctl-ann-trio-side']);
    expect(plan.vms.map((v) => [v.name, v.nics.map((n) => n.address)])).toEqual([
      ['ann-trio-alpha', ['10.77.0.5']],
      ['ann-trio-beta', ['10.77.0.10']],
      ['ann-trio-gamma', ['10.78.0.10']],
    ]);
    expect(plan.levels).toEqual([['alpha', 'beta'], ['gamma']]);
    expect(plan.memoryMiB).toBe(3 * 384);
    expect(planLab(spec(), 'bob', { memoryOf: () => 384 }).vms[0]!.name).toBe('bob-trio-alpha');
  });

  it('a VM learns the names of the lab VMs it shares a network with, and nothing else', () => {
    const plan = planLab(spec(), 'ann', { memoryOf: () => 384 });
    const hosts = (key: string) => (labVmCreateInput(plan, plan.vms.find((v) => v.key === key)!).extraUserData.write_files as { path: string; content: string }[])[0]!.content;
    expect(hosts('beta')).toMatch(/^10\.77\.0\.5 alpha$/m);
    expect(hosts('gamma')).not.toMatch(/alpha|beta/);
    const nc = labVmCreateInput(plan, plan.vms[0]!).extraNetworkConfig as { ethernets: Record<string, { addresses: string[]; match: { macaddress: string } }> };
    expect(nc.ethernets.eth1!.addresses).toEqual(['10.77.0.5/24']);
    expect(nc.ethernets.eth1!.match.macaddress).toMatch(/^52:54:00:/);
  });

  it('refuses a bad prefix', () => {
    expect(() => planLab(spec(), 'Bad_Prefix', { memoryOf: () => 1 })).toThrow(/invalid lab prefix/);
  });
});
