/**
 * cloud-init for vmctl guests: per-VM SSH keys on the client, the NoCloud seed
 * documents (user-data, meta-data, network-config) and the seed ISO. One
 * import for what lives in:
 *
 *   cloudinit-keys.ts    host + user key pairs, the VM state dir, known_hosts pinning
 *   cloudinit-seed.ts    seed documents built as YAML objects (PyYAML-safe)
 *   cloudinit-early.ts   plain files (vmctl/) the tuned image applies before sshd
 *   cloudinit-iso.ts     the seed ISO (genisoimage / xorriso)
 *   cloudinit-status.ts  `cloud-init status` in the guest (also exported by ssh.ts)
 *   redact.ts            secrets hidden from JSON, inspect and logs
 */
export {
  HOST_KEY_FILE,
  KNOWN_HOSTS_FILE,
  USER_KEY_FILE,
  assertPublicKeys,
  ensureVmKeys,
  generateHostKey,
  generateUserKey,
  hostPatternFor,
  keyPairFromPrivate,
  loadVmKeys,
  pinHostKey,
  type EnsureVmKeysOptions,
  type SshKeyPair,
  type StoredVmKeys,
  type VmKeys,
} from './cloudinit-keys.js';
export { CLOUD_INIT_DIR, buildSeedDocuments, mergeCloudConfig, seedDocuments, toCloudYaml, type SeedDocuments, type SeedInput } from './cloudinit-seed.js';
export { EARLY_DIR, earlySeedFiles, type EarlySeedFile, type EarlySeedInput } from './cloudinit-early.js';
export { SEED_LABEL, findExecutable, writeSeedIso, type IsoTool, type WriteSeedIsoOptions } from './cloudinit-iso.js';
