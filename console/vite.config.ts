// Builds the console into the Python package, so `pip install -e .` (and a wheel) serves it.
import { defineConfig, type Plugin } from 'vite';
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

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

export default defineConfig({
  plugins: [react(), precompress()],
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
