// Builds the demo page into crdtsync/relay/demo_static/ (or the folder given with --out):
// app.js (one ES module with CodeMirror, y-codemirror.next, y-websocket and one copy of
// yjs), app.css and editor.css, index.html, favicon.svg and licenses.txt.
//
// The output is committed, so `pip install crdtsync` serves the page without node. It is
// reproducible: tests/apps/test_demo_bundle.py runs `npm ci` and this script in a copy of
// this folder and compares every file byte for byte.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf('--out');
const out = resolve(i > 0 ? process.argv[i + 1] : join(here, '../../../crdtsync/relay/demo_static'));
mkdirSync(out, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  // No absolute paths, dates or environment in the output: same input, same bytes.
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
  absWorkingDir: here,
};
const js = await build({
  ...common,
  metafile: true,
  entryPoints: ['src/main.js'],
  outfile: join(out, 'app.js'),
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
});
for (const css of ['app', 'editor']) {
  await build({ ...common, entryPoints: [`src/${css}.css`], outfile: join(out, `${css}.css`) });
}
for (const file of ['index.html', 'favicon.svg']) copyFileSync(join(here, file), join(out, file));

// The licences of every package bundled into app.js, served beside it.
const packages = new Set();
for (const input of Object.keys(js.metafile.inputs)) {
  const m = /^node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) packages.add(m[1]);
}
const notices = [...packages].sort().map((name) => {
  const dir = join(here, 'node_modules', name);
  const { version, license } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const file = readdirSync(dir).sort().find((f) => /^licen[cs]e/i.test(f));
  const text = file ? readFileSync(join(dir, file), 'utf8').trim() : `License: ${license}`;
  return `${name} ${version}\n${'-'.repeat(name.length + version.length + 1)}\n${text}\n`;
});
writeFileSync(
  join(out, 'licenses.txt'),
  `Packages bundled into app.js, and their licences.\n\n${notices.join('\n')}`,
);
