/**
 * Throwaway X.509 PKI for TLS tests, made with the openssl CLI (fails loudly
 * if it is missing). Layout matches libvirt's ?pkipath=DIR expectations:
 * DIR/cacert.pem, DIR/clientcert.pem, DIR/clientkey.pem.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface TestCa {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
}

export interface TestCert {
  readonly cert: string;
  readonly key: string;
}

/** A self-signed CA in dir/NAME-ca.pem (+ key). */
export function makeCa(dir: string, name: string): TestCa {
  mkdirSync(dir, { recursive: true });
  const cnf = join(dir, `${name}-ca.cnf`);
  writeFileSync(
    cnf,
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      'x509_extensions = v3',
      '[dn]',
      `CN = vmctl test CA ${name}`,
      '[v3]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  const cert = join(dir, `${name}-ca.pem`);
  const key = join(dir, `${name}-ca.key`);
  openssl(['req', '-x509', '-config', cnf, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '3'], dir);
  return { dir, cert, key };
}

/**
 * A leaf certificate signed by `ca`. `altNames` are subjectAltName entries
 * such as 'DNS:localhost', 'IP:127.0.0.1'; usage picks the extendedKeyUsage.
 */
export function makeCert(ca: TestCa, name: string, usage: 'server' | 'client', altNames: readonly string[] = []): TestCert {
  const dir = ca.dir;
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const cnf = join(dir, `${name}.cnf`);
  writeFileSync(
    cnf,
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      `CN = ${name}`,
      'O = vmctl tests',
      '[v3]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage = ${usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
      ...(altNames.length > 0 ? [`subjectAltName = ${altNames.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  openssl(['req', '-new', '-config', cnf, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr], dir);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', cnf, '-extensions', 'v3'], dir);
  return { cert, key };
}
