import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/_helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 300_000,
    // integration tests share one libvirtd and one test rig: keep files sequential
    fileParallelism: false,
    reporters: ['default'],
  },
});
