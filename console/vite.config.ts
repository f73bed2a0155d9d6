// The web console's build: console/ → console/dist, served by the gateway's API listener
// (src/api/console-assets.ts). `npm run build:console` runs it; `npm install` does too.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1500 },
  logLevel: 'warn',
});
