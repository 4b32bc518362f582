#!/usr/bin/env bash
# System packages the tests need, installed when missing and apt is usable; prints what it did.
# - Mesa's OSMesa/EGL: MuJoCo's offscreen rendering (Meta-World cameras).
# - Debian's chromium + chromium-driver: the operator page's browser test (Selenium drives the
#   system browser; nothing downloads one). Without them that test is skipped and says why.
set -euo pipefail
can_apt() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }
updated=0
apt_install() {
  if [ "$updated" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq; updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ldconfig -p 2>/dev/null | grep -q -E 'libOSMesa\.so|libEGL\.so'; then
  echo "offscreen GL libraries present"
elif can_apt; then
  echo "installing offscreen GL libraries (libosmesa6 libegl1 libgl1)"
  apt_install libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1
else
  echo "WARNING: no libOSMesa/libEGL found and cannot apt-get install; MuJoCo rendering will fail" >&2
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium and chromedriver present"
elif can_apt && apt-cache show chromium-driver >/dev/null 2>&1; then
  echo "installing Debian's chromium and chromium-driver (the operator page's browser test)"
  apt_install chromium chromium-driver
else
  echo "WARNING: no Debian chromium/chromium-driver; the operator page's browser test will be skipped" >&2
fi
