#!/bin/sh
# The Debian packages the test suite runs for real, checked by what they can do rather than
# by command name: `apt-get install --no-install-recommends swaks` gives a swaks that cannot
# speak TLS (Net::SSLeay and IO::Socket::SSL are only recommended), and a machine can have
# swaks without them.
#
#   system-deps.sh           install what is missing (apt-get update first), then check again
#   system-deps.sh --check   only check; exit 1 naming each missing capability
set -u

capabilities() {
    # need NAME TEST PACKAGE...: TEST (a shell command) proves NAME; the packages provide it.
    need "python venv"     '"${PYTHON:-python3}" -c "import ensurepip, venv"' python3-venv
    need "swaks"           'command -v swaks' swaks
    need "swaks STARTTLS"  'swaks --support 2>&1 | grep -q "^=== TLS supported"' \
                           swaks libnet-ssleay-perl libio-socket-ssl-perl
    need "swaks AUTH"      'swaks --support 2>&1 | grep -q "^=== Basic AUTH supported"' swaks
    need "unbound"         'PATH="$PATH:/usr/sbin" unbound -V' unbound
    # tests/support/dnssec.py: signs the DANE tests' zones (key and signatures).
    need "ldns-signzone"   'command -v ldns-keygen && command -v ldns-signzone' ldnsutils
    need "redis-server"    'redis-server --version' redis-server
    need "rspamd"          'PATH="$PATH:/usr/sbin" rspamd --version' rspamd
    need "openssl"         'openssl version' openssl
    need "systemd-analyze" 'systemd-analyze --version && systemd-sysusers --version' systemd
    need "strace"          'strace -V' strace
    need "unshare"         'unshare --version' util-linux
    # tests/console: a headless page load proves the browser runs (as root too, hence
    # --no-sandbox), not only that its launcher exists.
    need "chromium headless" 'chromium --headless --no-sandbox --disable-gpu \
                             --dump-dom "data:text/html,<p>ok</p>" | grep -q "<p>ok</p>"' chromium
    need "chromedriver"    'chromedriver --version' chromium-driver
}

need() {
    name=$1 test=$2
    shift 2
    if ! sh -c "$test" >/dev/null 2>&1; then
        missing_names="$missing_names
  - $name (from: $*)"
        missing_packages="$missing_packages $*"
    fi
}

check() {
    missing_packages="" missing_names=""
    capabilities
}

check
[ -z "$missing_packages" ] && exit 0
if [ "${1:-}" = "--check" ]; then
    echo "the test suite needs these, and this machine lacks them:$missing_names" >&2
    exit 1
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
packages=$(echo "$missing_packages" | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
echo "installing Debian packages: $packages"
$sudo apt-get update -qq || exit 1
# shellcheck disable=SC2086  # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $packages >/dev/null || exit 1

check
if [ -n "$missing_packages" ]; then
    echo "still missing after apt-get install:$missing_names" >&2
    exit 1
fi
