#!/usr/bin/env bash
# Vendor the calendar libraries into static/vendor from the npm registry, pinned by version and
# checked against the registry's sha512 integrity (the `dist.integrity` of `npm view`), so the
# reservation pages never load anything from a CDN. The results are committed: `make run` needs
# no npm. Re-run after changing a pin (`make vendor-calendar`).
#
# * FullCalendar's standard bundle (MIT): core, day grid, time grid, list, multi-month and
#   interaction in one self-contained global build (CSS included). Pinned to the 6.1 line: 7.x
#   needs the Temporal API (a polyfill for browsers without it) and changed the options.
# * vis-timeline's standalone UMD build (MIT or Apache-2.0, bundles its own dependencies) for the
#   operators' resource timeline: FullCalendar's resource timeline is a premium plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
FULLCALENDAR=6.1.21
FULLCALENDAR_SHA512=yGZhflQmfCJKmmOlwJcQ0MPNAYABieaiJp9AaRgHBMRIUxNA+VFa6mkIbVNpjdSZIy9AY2HwteTt58tJ+3ktuQ==
VIS_TIMELINE=8.5.4
VIS_TIMELINE_SHA512=Xt7RNrRvOkQiSyk6vFTXSRwTunT0y9MzDgHY8N8H9nPuebJ6Vg+u3xnv0Swbxna/Pa2E3HjaBblEIQiK74E01Q==

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fetch() {  # name version sha512(base64) -> unpacked into $tmp/package
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null)
  local tgz; tgz="$tmp/$(echo "$1" | sed 's|^@||; s|/|-|')-$2.tgz"
  local got; got=$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)
  if [ "$got" != "$3" ]; then
    echo "integrity mismatch for $1@$2: expected sha512-$3, got sha512-$got" >&2
    exit 1
  fi
  rm -rf "$tmp/package"; tar -xzf "$tgz" -C "$tmp"
}

fetch fullcalendar "$FULLCALENDAR" "$FULLCALENDAR_SHA512"
rm -rf static/vendor/fullcalendar && mkdir -p static/vendor/fullcalendar
cp "$tmp/package/index.global.min.js" "$tmp/package/LICENSE.md" static/vendor/fullcalendar/
echo "fullcalendar $FULLCALENDAR sha512-$FULLCALENDAR_SHA512" > static/vendor/fullcalendar/VERSION

fetch vis-timeline "$VIS_TIMELINE" "$VIS_TIMELINE_SHA512"
rm -rf static/vendor/vis-timeline && mkdir -p static/vendor/vis-timeline
cp "$tmp/package/standalone/umd/vis-timeline-graph2d.min.js" "$tmp/package/styles/vis-timeline-graph2d.min.css" \
   "$tmp/package/LICENSE.md" "$tmp/package/LICENSE.MIT.txt" "$tmp/package/LICENSE.Apache-2.0.txt" \
   static/vendor/vis-timeline/
# The minified files point at source maps that are not vendored: drop the comment (no 404s in the console).
sed -i '/^\/\/# sourceMappingURL=/d; s|/\*# sourceMappingURL=[^*]*\*/||' \
  static/vendor/vis-timeline/vis-timeline-graph2d.min.js static/vendor/vis-timeline/vis-timeline-graph2d.min.css
echo "vis-timeline $VIS_TIMELINE sha512-$VIS_TIMELINE_SHA512" > static/vendor/vis-timeline/VERSION
echo "vendored FullCalendar $FULLCALENDAR and vis-timeline $VIS_TIMELINE into static/vendor"
