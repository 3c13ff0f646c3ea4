// Builds the chat page into dist/ (or the folder given as --outdir DIR): app.js (src/app.js
// and @stomp/stompjs in one minified script), app.css and index.html. The versions in
// package-lock.json fix the output byte for byte, which is what check-bundle relies on.
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf("--outdir");
const outdir = path.resolve(flag > 0 ? process.argv[flag + 1] : path.join(here, "dist"));
await mkdir(outdir, { recursive: true });

const stomp = JSON.parse(
  await readFile(path.join(here, "node_modules/@stomp/stompjs/package.json"), "utf8"),
);
const sockjs = JSON.parse(
  await readFile(path.join(here, "node_modules/sockjs-client/package.json"), "utf8"),
);
const banner =
  `/* chat-service web client, built from web/src by web/build.mjs. ` +
  `Includes @stomp/stompjs ${stomp.version} (${stomp.license}, https://github.com/stomp-js/stompjs) ` +
  `and sockjs-client ${sockjs.version} (${sockjs.license}, https://github.com/sockjs/sockjs-client). */`;

const targets = ["es2020", "chrome100", "firefox100", "safari15"];
await esbuild.build({
  entryPoints: [path.join(here, "src/app.js")],
  outfile: path.join(outdir, "app.js"),
  bundle: true,
  format: "iife",
  minify: true,
  target: targets,
  legalComments: "none",
  banner: { js: banner },
  // sockjs-client reads `global` (it was written for browserify).
  define: { global: "window" },
  charset: "utf8",
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: [path.join(here, "src/app.css")],
  outfile: path.join(outdir, "app.css"),
  bundle: true,
  minify: true,
  target: targets,
  charset: "utf8",
  logLevel: "warning",
});
await copyFile(path.join(here, "src/index.html"), path.join(outdir, "index.html"));
console.log(`built ${path.relative(process.cwd(), outdir) || "."}/{index.html,app.js,app.css}`);
