# Sourced by scripts/test and scripts/e2e: makes sure Debian's Chromium and
# ChromeDriver are installed for the staff UI's browser tests
# (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent; needs root for the
# install. Never downloads a browser of its own: the machine's network only
# reaches package registries.

ensure_chromium() {
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    return
  fi
  echo "installing Chromium and ChromeDriver from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  /usr/bin/chromium --version
  /usr/bin/chromedriver --version
}
