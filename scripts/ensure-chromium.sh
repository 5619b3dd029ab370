#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium, because the browser tests
# (tests/test_browser.py) drive it headless with Playwright for Python. Playwright's own browser
# download is never used. Idempotent and silent when chromium is already there. As root with apt
# it installs Debian's `chromium` and a font (`fonts-dejavu-core`, so pages and screenshots render
# text); otherwise it says how to.
#
# The rule for failing: the browser is required when INTEGRATIONS_REQUIRE_BROWSER is 1/true/yes;
# when that variable is unset it follows INTEGRATIONS_REQUIRE_POSTGRES (CI sets that to 1, so CI
# requires both). Set INTEGRATIONS_REQUIRE_BROWSER=0 to skip the browser tests on purpose. Without
# chromium the browser tests skip, or fail when required, so this script exits non-zero only then.
# tests/browser_support.py applies the same rule.
set -euo pipefail

CHROMIUM=${INTEGRATIONS_CHROMIUM:-/usr/bin/chromium}

truthy() {
    case "${1,,}" in 1 | true | yes) return 0 ;; *) return 1 ;; esac
}

required() {
    if [[ -n "${INTEGRATIONS_REQUIRE_BROWSER+set}" ]]; then
        truthy "${INTEGRATIONS_REQUIRE_BROWSER}"
    else
        truthy "${INTEGRATIONS_REQUIRE_POSTGRES:-}"
    fi
}

[[ -x "$CHROMIUM" ]] && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && [[ "$CHROMIUM" == /usr/bin/chromium ]]; then
    echo "ensure-chromium: $CHROMIUM not found; installing Debian's chromium (browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium fonts-dejavu-core </dev/null >/dev/null
    if [[ -x "$CHROMIUM" ]]; then
        echo "ensure-chromium: installed; $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
        exit 0
    fi
    echo "ensure-chromium: installed chromium but $CHROMIUM is still missing" >&2
    exit 1
fi

cat >&2 <<MSG
ensure-chromium: $CHROMIUM not found.
  The browser tests (tests/test_browser.py) drive Debian's Chromium headless with Playwright
  (never Playwright's own browser download).
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install chromium fonts-dejavu-core
  Elsewhere:      install Chromium and point INTEGRATIONS_CHROMIUM at its executable.
MSG
if required; then
    echo "ensure-chromium: the browser is required (INTEGRATIONS_REQUIRE_BROWSER, or" \
        "INTEGRATIONS_REQUIRE_POSTGRES in CI), so this is an error" >&2
    exit 1
fi
echo "ensure-chromium: continuing; the browser tests will be skipped" >&2
