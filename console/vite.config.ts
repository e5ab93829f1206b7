// The console is served by Salon itself under /console/ (server/console_static).
// Chart.js and <model-viewer> are dynamic imports, so they land in their own
// chunks and the main bundle stays small. No timestamps or random ids are
// written: the same sources build the same bytes (the output is committed).
import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// three.js's meshopt decoder compiles WebAssembly on import, which the
// console's CSP refuses; the console never decodes meshopt (src/lib/meshopt-stub.ts).
const meshoptStub = decodeURIComponent(new URL('./src/lib/meshopt-stub.ts', import.meta.url).pathname);

export default defineConfig({
  base: '/console/',
  plugins: [preact({ prerender: { enabled: false }, devtoolsInProd: false })],
  resolve: {
    alias: [{ find: /^three\/examples\/jsm\/libs\/meshopt_decoder\.module\.js$/, replacement: meshoptStub }],
  },
  build: {
    outDir: '../server/console_static',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    proxy: {
      '/v1': { target: 'http://127.0.0.1:8791', ws: true },
    },
  },
});
