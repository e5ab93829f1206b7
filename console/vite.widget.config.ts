// The embeddable chat widget (src/widget): one self-contained, minified IIFE,
// server/console_static/widget.js, built after the console (whose build empties
// that folder first, so this one must not). Plain TypeScript + DOM, no
// framework, no CSS file (styles live in the shadow root), no sourcemap, no
// hash or timestamp: the same sources build the same bytes.
//
//   npx vite build -c vite.widget.config.ts
import { type Plugin, defineConfig } from 'vite';

// Escape non-ASCII characters (the "…" of "sending…"): the script is then read
// the same whatever charset the host page or the server declares.
const asciiOnly: Plugin = {
  name: 'salon-widget-ascii-only',
  generateBundle(_options, bundle) {
    for (const file of Object.values(bundle)) {
      if (file.type === 'chunk') {
        file.code = file.code.replace(
          /[\u0080-\uffff]/g,
          (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'),
        );
      }
    }
  },
};

export default defineConfig({
  publicDir: false,
  logLevel: 'warn',
  plugins: [asciiOnly],
  build: {
    outDir: '../server/console_static',
    emptyOutDir: false,
    copyPublicDir: false,
    target: 'es2020',
    cssTarget: ['chrome100', 'edge100', 'firefox100', 'safari15'],
    sourcemap: false,
    minify: true,
    reportCompressedSize: false,
    lib: {
      entry: 'src/widget/index.ts',
      name: 'SalonWidget', // window.SalonWidget = { open, close, setToken }
      formats: ['iife'],
      fileName: () => 'widget.js',
    },
  },
});
