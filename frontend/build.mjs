// Bundle the dashboard into ../tradebot/ui/static, which the API serves at / and /ui/*.
// Everything the page loads comes from there: no CDN, so it works offline.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = new URL("../tradebot/ui/static/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: `${out}app.js`,
  legalComments: "linked",
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) copyFileSync(`src/${file}`, `${out}${file}`);
console.log(`dashboard built into ${out}`);
