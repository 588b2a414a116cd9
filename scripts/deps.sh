#!/usr/bin/env bash
# deps.sh — installs what pythiac needs on Debian 12, with apt-get, only if
# something is missing.  Run as root (or with sudo available).
set -euo pipefail
PKGS=(gcc libc6-dev make cmake llvm-19-dev libcjson-dev libutf8proc-dev libxxhash-dev python3 python3-numpy binutils file)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps.sh: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
