#!/usr/bin/env bash
# Builds the lattice console's page (console/dist: index.html, console.js,
# console.css) from console/src with the exact packages console/package-lock.json
# pins, from the npm registry: cytoscape and cytoscape-dagre (the topology),
# uPlot (the charts), esbuild (the bundler) and playwright-core (which drives
# Debian's Chromium in the console's browser test). Installs Node.js and npm
# from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../console"

if ! command -v npm >/dev/null; then
  echo "==> installing nodejs npm"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
# npm can write a lockfile without other platforms' esbuild binaries; `npm ci`
# then fails on them, so say so at once.
grep -q '"node_modules/@esbuild/linux-x64"' package-lock.json ||
  { echo "console/package-lock.json lacks @esbuild/linux-x64: regenerate it (rm -rf node_modules package-lock.json && npm install --ignore-scripts)" >&2; exit 1; }
# No install scripts: esbuild's only one fetches what the lockfile already pins.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
mkdir -p dist
node_modules/.bin/esbuild src/console.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=eof --log-level=warning --outfile=dist/console.js
cp src/index.html dist/index.html
echo "==> console/dist: $(du -b dist/console.js | cut -f1) bytes of JavaScript"
