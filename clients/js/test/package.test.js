// The package as it ships: its size, its type declarations, and what `npm pack` puts in it.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUDGET = 8 * 1024;

test("the client bundled, minified and gzipped fits in 8 KB", async () => {
  const result = await build({
    entryPoints: [join(ROOT, "src/client.js")],
    bundle: true,
    minify: true,
    format: "esm",
    write: false,
  });
  const minified = result.outputFiles[0].contents;
  const gzipped = gzipSync(minified, { level: 9 }).length;
  console.log(`client.js: ${minified.length} bytes minified, ${gzipped} bytes minified + gzipped (budget ${BUDGET})`);
  assert.ok(minified.length > 5000, "the bundle holds the whole client");
  assert.ok(gzipped <= BUDGET, `${gzipped} bytes gzipped is over the ${BUDGET}-byte budget`);
});

test("the sources have no runtime dependencies and import only each other", () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  assert.equal(manifest.dependencies, undefined);
  assert.equal(manifest.type, "module");
  const sources = execFileSync("git", ["ls-files", "src"], { cwd: ROOT, encoding: "utf8" }).split("\n").filter(Boolean);
  for (const source of sources) {
    for (const [, target] of readFileSync(join(ROOT, source), "utf8").matchAll(/^(?:import|export)[^\n]*from "([^"]+)"/gm)) {
      assert.match(target, /^\.\/[a-z-]+\.js$/, `${source} imports ${target}`);
    }
  }
});

test("npm pack ships the sources and declarations that a TypeScript user compiles against", () => {
  const out = mkdtempSync(join(tmpdir(), "realtime-pack-"));
  const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", out], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }));
  const files = packed[0].files.map((file) => file.path).sort();
  assert.ok(files.includes("src/client.js") && files.includes("types/client.d.ts") && files.includes("package.json"), files.join(" "));
  assert.ok(!files.some((path) => path.startsWith("test/") || path.startsWith("node_modules/")), files.join(" "));
  const declarations = readFileSync(join(ROOT, "types/client.d.ts"), "utf8");
  // The protocol's unions too: tests/streaming/test_asyncapi.py compares them with the server's AsyncAPI document.
  const names = ["class RealtimeClient", "subscribe(", "publish(", "sendToUser(", "ClientOptions"];
  for (const name of [...names, "type ClientAction", "type ServerFrameType", "type StreamEventName"]) {
    assert.ok(declarations.includes(name), `types/client.d.ts declares ${name}`);
  }
  // A consumer's code type-checks against the declarations; a misuse of the API does not.
  const good = join(out, "good.ts");
  const bad = join(out, "bad.ts");
  const entry = JSON.stringify(join(ROOT, "types/client.js"));
  writeFileSync(good, readFileSync(join(ROOT, "test/types/usage.ts"), "utf8").replace('"../../types/client.js"', entry));
  writeFileSync(bad, `import { RealtimeClient } from ${entry};\nnew RealtimeClient({ transport: "carrier-pigeon" });\n`);
  const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
  const options = ["--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "--lib", "es2022,dom"];
  execFileSync(process.execPath, [tsc, ...options, good], { encoding: "utf8" });
  assert.throws(() => execFileSync(process.execPath, [tsc, ...options, bad], { encoding: "utf8", stdio: "pipe" }), (error) =>
    /carrier-pigeon/.test(`${error.stdout}${error.stderr}`),
  );
});
