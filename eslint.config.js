import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Layering: cli → core → libvirt. src/libvirt imports nothing from src/core or
 * src/cli; src/core imports nothing from src/cli. (Relative imports only —
 * the code has no path aliases.) test/unit/lint-rules.test.ts proves the rules fire.
 */
const importFrom = (dirs) => ({ regex: `^\\.{1,2}/(?:.*/)?(?:${dirs.join('|')})/`, caseSensitive: true });
const LAYER_RULES = {
  libvirt: {
    files: ['src/libvirt/**/*.ts'],
    patterns: [{ ...importFrom(['core', 'cli']), message: 'src/libvirt is the bottom layer: it must not import from src/core or src/cli (move what is shared into src/libvirt).' }],
  },
  core: {
    files: ['src/core/**/*.ts'],
    patterns: [{ ...importFrom(['cli']), message: 'src/core must not import from src/cli (cli → core → libvirt): move the shared code into core.' }],
  },
};

/** The raw generated API (`conn.remote`) stays inside src/libvirt: core and cli use the typed wrappers. */
const NO_REMOTE_MESSAGE =
  '`.remote` (the raw generated procedures) is for src/libvirt only: add a typed method to Connection or to a wrapper in src/libvirt/objects/ and call that.';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      '.cache/**',
      'coverage/**',
      // ajv standalone code written by `npm run codegen:templates`; a unit test keeps it in sync
      'src/core/template/validate.gen.ts',
      'src/core/lab/validate.gen.ts',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  ...Object.values(LAYER_RULES).map(({ files, patterns }) => ({
    files,
    rules: { 'no-restricted-imports': ['error', { patterns }] },
  })),
  {
    files: ['src/core/**/*.ts', 'src/cli/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "MemberExpression[property.name='remote']", message: NO_REMOTE_MESSAGE },
        { selector: "ObjectPattern > Property[key.name='remote']", message: NO_REMOTE_MESSAGE },
      ],
    },
  },
  {
    files: ['bin/**/*.js', 'scripts/**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    // generated code: only checked for syntax, never hand-edited
    files: ['src/libvirt/generated/**'],
    rules: { '@typescript-eslint/no-unused-vars': 'off', 'no-unused-vars': 'off' },
  },
);
