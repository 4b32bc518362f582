#!/usr/bin/env bash
# System libraries for MuJoCo's offscreen rendering (Meta-World cameras).
# Installs Mesa's OSMesa/EGL when missing and apt is usable; prints what it did.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q -E 'libOSMesa\.so|libEGL\.so'; then
  echo "offscreen GL libraries present"
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing offscreen GL libraries (libosmesa6 libegl1 libgl1)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null
else
  echo "WARNING: no libOSMesa/libEGL found and cannot apt-get install; MuJoCo rendering will fail" >&2
fi
