#!/usr/bin/env bash
# Install the Debian packages the tests run for real (Postfix, pflogsumm, ...).
#
# `make test` runs this before pytest. It installs only what is missing, so on a warm
# machine it costs a few dpkg-query calls and never touches the network; `apt-get update`
# runs at most once, and only when something is missing. Run it as root on Debian/Ubuntu.
#
# To add a server: append its package to PACKAGES and, if its maintainer scripts ask
# questions, the answers to DEBCONF.
set -euo pipefail

PACKAGES=(
  postfix     # tests/servers/postfix.py: a private instance on 127.0.0.1
  pflogsumm   # cross-checks Mailmon's Postfix numbers
)

# Preseeded answers: "No configuration" installs Postfix without a main.cf, so no system
# daemon starts and nothing listens on port 25.
DEBCONF=(
  "postfix postfix/main_mailer_type select No configuration"
  "postfix postfix/mailname string localhost"
)

APT_OPTIONS=(-o DPkg::Lock::Timeout=600)

installed() {
  case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" in
    *" ok installed") return 0 ;;
    *) return 1 ;;
  esac
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: this script installs Debian packages (apt-get); on this system" >&2
  echo "install these yourself, then run the tests: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-test-deps: run as root:  sudo $0" >&2
  exit 1
fi

echo "install-test-deps: installing ${missing[*]}"
printf '%s\n' "${DEBCONF[@]}" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get "${APT_OPTIONS[@]}" update -qq
apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends "${missing[@]}"

for package in "${missing[@]}"; do
  if ! installed "$package"; then
    echo "install-test-deps: $package is still not installed" >&2
    exit 1
  fi
done
