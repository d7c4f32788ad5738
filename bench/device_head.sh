#!/usr/bin/env bash
# bench/device_pending.sh MODE on the device, run from a snapshot of HEAD instead of the working tree: the tree
# travels as it is, so half-done edits (a helper's, uncommitted) would be what gets tested and timed.
#   here, before the call:  bash bench/device_head.sh prepare   (writes .carry/head.tgz, about 0.8 MiB)
#   the call:               bash bench/device_head.sh MODE      carry: .whl .carry/shared .carry/shared_extra.tgz
#                                                                      .carry/head.tgz
# The snapshot's commit is printed first and written to $OUT/head.txt.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${1:-} == prepare ]]; then
  cd "$here"
  mkdir -p .carry
  rev=$(git rev-parse --short HEAD)
  tmp=$(mktemp -d)
  git archive HEAD src bench tests conftest.py pyproject.toml | tar x -C "$tmp"
  echo "$rev $(git log -1 --format=%cI HEAD)" > "$tmp/HEAD_COMMIT"
  tar czf .carry/head.tgz -C "$tmp" .
  rm -rf "$tmp"
  echo "snapshot of $rev in .carry/head.tgz ($(du -h .carry/head.tgz | cut -f1))"
  exit 0
fi
snap=/tmp/qrank_head
rm -rf "$snap"; mkdir -p "$snap"
tar xzf "$here/.carry/head.tgz" -C "$snap"
ln -s "$here/.carry" "$snap/.carry"; ln -s "$here/.whl" "$snap/.whl"
echo "snapshot: $(cat "$snap/HEAD_COMMIT")" | tee "${OUT:-/tmp/out}/head.txt"
cd "$snap" && exec bash bench/device_pending.sh "$@"
