// Runs examples/exchange_bench compiled to wasm32-wasip1 in Node's V8 (the
// engine Envoy embeds), optionally under --cpu-prof, to see where the
// filter's own time goes in wasm. Host calls are stubbed (they return 0):
// the core runs against its fake store, clock and metrics, as natively.
//   node --no-warnings bench/wasm-profile/run.mjs WASM CONFIG BODY
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [wasmPath, config, body] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: ['exchange_bench', config, body],
  env: { N: process.env.N || '30000' },
  preopens: { '.': '.' },
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(module)) {
  imports[imp.module] ??= {};
  if (!(imp.name in imports[imp.module])) imports[imp.module][imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// A library crate's example exports _initialize too; WASI start wants _start only.
const exports = Object.assign({}, instance.exports);
delete exports._initialize;
wasi.start({ exports });
