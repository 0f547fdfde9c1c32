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
  prometheus  # promtool: checks and unit-tests alerts/ (tests/test_alert_rules.py)
  prometheus-alertmanager  # amtool: checks alerts/alertmanager.yml
  dovecot-imapd  # tests/servers/dovecot.py: a private IMAP + LMTP + Sieve instance
  dovecot-lmtpd
  dovecot-sieve
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

# ---- Exim (tests/servers/exim.py, tests/integration/test_exim_real.py) -------------------
# exim4-daemon-light conflicts with postfix, so it is unpacked from its .deb into a cache
# directory instead of installed; its one missing library (libidn12) is installed, and the
# Debian-exim user its binary runs as is created.  Done once per machine.
EXIM_ROOT="${MAILMON_EXIM_ROOT:-/var/cache/mailmon-test/exim}"

install_exim() {
  local binary="$EXIM_ROOT/usr/sbin/exim4"
  if [ -x "$binary" ] && installed libidn12 && getent passwd Debian-exim >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: Exim is missing under $EXIM_ROOT; run as root:  sudo $0" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! installed libidn12; then
    apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends libidn12 \
      || { apt-get "${APT_OPTIONS[@]}" update -qq \
           && apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends libidn12; }
  fi
  if [ ! -x "$binary" ]; then
    local download
    download="$(mktemp -d)" && chmod 755 "$download"  # readable by apt's _apt user
    (cd "$download" && apt-get download exim4-daemon-light) \
      || (apt-get "${APT_OPTIONS[@]}" update -qq && cd "$download" && apt-get download exim4-daemon-light)
    mkdir -p "$EXIM_ROOT"
    dpkg -x "$download"/exim4-daemon-light_*.deb "$EXIM_ROOT"
    rm -rf "$download"
  fi
  getent passwd Debian-exim >/dev/null || useradd --system --user-group --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
  if ldd "$binary" | grep -q 'not found'; then
    echo "install-test-deps: $binary lacks libraries:" >&2
    ldd "$binary" | grep 'not found' >&2
    exit 1
  fi
}
install_exim
# ---- end of Exim --------------------------------------------------------------------------

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

# The tests run private servers on loopback: a system service that a package we just
# installed enabled must not hold the standard ports (services installed before are
# the machine owner's and left alone).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for package in "${missing[@]}"; do
    case "$package" in
      prometheus|prometheus-alertmanager|postfix|dovecot-imapd|dovecot-lmtpd|dovecot-sieve)
        systemctl disable --now "$package" >/dev/null 2>&1 || true ;;
    esac
  done
fi
