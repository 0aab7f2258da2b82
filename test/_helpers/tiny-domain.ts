/** Domain XML for the tiny test guest (direct kernel boot, busybox initramfs, TCG). */
import { XMLBuilder } from 'fast-xml-parser';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });

export interface TinyDomainOptions {
  name: string;
  kernel: string;
  initrd: string;
  /** kernel command line (the rig's tinyCmdline); default: serial console, quiet */
  cmdline?: string;
  memoryMiB?: number;
  /** also copy the serial console to this file (libvirt's <log>, written by virtlogd) */
  serialLog?: string;
}

export function tinyDomainXml(o: TinyDomainOptions): string {
  return builder.build({
    domain: {
      '@_type': 'qemu',
      name: o.name,
      memory: { '@_unit': 'MiB', '#text': o.memoryMiB ?? 96 },
      vcpu: 1,
      os: {
        type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' },
        kernel: o.kernel,
        initrd: o.initrd,
        cmdline: o.cmdline ?? 'console=ttyS0 quiet panic=-1',
      },
      features: { acpi: '' },
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices: {
        serial: { '@_type': 'pty', target: { '@_port': 0 }, ...(o.serialLog ? { log: { '@_file': o.serialLog, '@_append': 'off' } } : {}) },
        console: { '@_type': 'pty', target: { '@_type': 'serial', '@_port': 0 } },
        memballoon: { '@_model': 'none' },
      },
    },
  }) as string;
}
