// Builds the console into the Python package, so `pip install -e .` (and a wheel) serves it.
import { defineConfig, type Plugin } from 'vite';
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { JDM_CHILDREN, JDM_ZH } from './src/i18n/jdm';

const outDir = fileURLToPath(new URL('../src/orderhub/entrypoints/api/console_dist', import.meta.url));

/** file.gz beside each text asset: FastAPI serves it to browsers that accept gzip (console.py), a
 * quarter of the bytes (the rules page: 4.6 MB → 1.25 MB) without a compression middleware. */
function precompress(): Plugin {
  return {
    name: 'orderhub-precompress',
    apply: 'build',
    closeBundle() {
      const assets = join(outDir, 'assets');
      for (const name of readdirSync(assets)) {
        if (!/\.(js|css|wasm|svg|json|ttf)$/.test(name)) continue;
        const data = readFileSync(join(assets, name));
        if (data.length > 1024) writeFileSync(join(assets, `${name}.gz`), gzipSync(data, { level: 9 }));
      }
    },
  };
}

/** The rule editor in the console's language: jdm-editor has no translation hook, so each of its label literals
 * that src/i18n/jdm.ts translates (as a display prop — children, title, label … — or one of JDM_CHILDREN) becomes a
 * call of `jdmText`. Identifiers (`name`, `key`, `type`, `value` …) are never touched. */
function jdmI18n(): Plugin {
  const props = 'children|label|title|placeholder|left|okText|cancelText|displayName|shortDescription|tagline|message|description';
  const asProp = new RegExp(`\\b(${props})(\\s*:\\s*)"([^"\\n]+)"`, 'g');
  const asChild = /(\n\s*)"([^"\n]+)"(\s*,?\s*\n)/g;
  const helper = fileURLToPath(new URL('./src/i18n/jdm.ts', import.meta.url));
  return {
    name: 'orderhub-jdm-i18n',
    apply: 'build',
    transform(code, id) {
      if (!/@gorules[\\/]jdm-editor[\\/]dist[\\/]index\.js$/.test(id)) return null;
      let count = 0;
      const call = (text: string) => { count += 1; return `__orderhubJdmText(${JSON.stringify(text)})`; };
      const out = code
        .replace(asProp, (all, prop, colon, text) => (text in JDM_ZH ? `${prop}${colon}${call(text)}` : all))
        .replace(asChild, (all, before, text, after) => (JDM_CHILDREN.includes(text) ? `${before}${call(text)}${after}` : all))
        .replace('? "Nodes" : "Graph"', () => `? ${call('Nodes')} : ${call('Graph')}`); // the first tab's title (a `name` prop)
      this.info(`jdm-editor: ${count} labels routed through the i18n layer`);
      return { code: `import { jdmText as __orderhubJdmText } from ${JSON.stringify(helper)};\n${out}`, map: null };
    },
  };
}

export default defineConfig({
  plugins: [react(), precompress(), jdmI18n()],
  base: '/',
  resolve: {
    alias: [
      // jdm-editor imports the whole `monaco-editor` (every language, ~80 of them) for one enum;
      // the editor API alone is enough: the rules page registers JavaScript/TypeScript itself.
      { find: /^monaco-editor$/, replacement: 'monaco-editor/esm/vs/editor/editor.api' },
    ],
  },
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: 'assets',
    // the rules page's chunk (jdm-editor + Monaco, ~4.6 MB) loads only on that page; every other page is small
    chunkSizeWarningLimit: 6000,
    sourcemap: false,
  },
  worker: { format: 'es' },
  server: {
    // `npm run dev` against a local `orderhub serve --demo`
    proxy: { '/api': 'http://127.0.0.1:8000' },
  },
});
