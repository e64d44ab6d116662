#!/usr/bin/env bash
# Vendor front-end assets into static/vendor from the npm registry, pinned by version and
# checked by sha256, so the portal never loads anything from a CDN.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fetch() {  # name version sha256
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null)
  local tgz; tgz="$tmp/$(echo "$1" | sed 's|^@||; s|/|-|')-$2.tgz"
  echo "$3  $tgz" | sha256sum -c --quiet
  rm -rf "$tmp/package"; tar -xzf "$tgz" -C "$tmp"
}
fetch htmx.org 2.0.11 165a2655073e9e6e55e307a7c74e8ebcdb76afb7701f9c16cfd106a13add408e
mkdir -p static/vendor/htmx && cp "$tmp/package/dist/htmx.min.js" "$tmp/package/LICENSE" static/vendor/htmx/
fetch @picocss/pico 2.1.1 4affbb56f49df6d5325610b06762156f1dcdbc6ef57cea5c136d7e8a00a8cd24
mkdir -p static/vendor/pico && cp "$tmp/package/css/pico.min.css" "$tmp/package/LICENSE.md" static/vendor/pico/
echo "vendored into static/vendor"
