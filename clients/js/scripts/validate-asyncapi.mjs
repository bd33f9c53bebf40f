// Validate an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser): the
// server's protocol document (/api/asyncapi/) is checked with it by tests/streaming/test_asyncapi.py.
//
//   node scripts/validate-asyncapi.mjs document.json
//
// Prints the parser's diagnostics as JSON ({severity: "error" | "warning" | "info" | "hint", code,
// message, path}), one array; exits 1 when there is no document or any diagnostic is an error.

import { readFileSync } from "node:fs";

import { DiagnosticSeverity, Parser } from "@asyncapi/parser";

const SEVERITIES = { [DiagnosticSeverity.Error]: "error", [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "info", [DiagnosticSeverity.Hint]: "hint" }; // prettier-ignore

const [path] = process.argv.slice(2);
if (!path) {
  console.error("usage: node scripts/validate-asyncapi.mjs document.json");
  process.exit(2);
}
const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"), { source: path });
const found = diagnostics.map((diagnostic) => ({
  severity: SEVERITIES[diagnostic.severity] ?? String(diagnostic.severity),
  code: String(diagnostic.code),
  message: diagnostic.message,
  path: diagnostic.path.join("/"),
}));
console.log(JSON.stringify(found, null, 1));
process.exit(document && !found.some((diagnostic) => diagnostic.severity === "error") ? 0 : 1);
