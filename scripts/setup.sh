#!/usr/bin/env bash
# Install what the tests, the demo and the benchmarks need, idempotently.
#
# Why a script and not a README paragraph: CI runs on brand-new machines, and the
# integration tests use real parts (a private dockerd, dig, dnsperf, debootstrap,
# busybox-static, chromium, and prometheus for ecssd-dns's HTTP service discovery). Quiet
# and fast when everything is already present.
#
# Env:
#   ECSSD_SKIP_PIP=1  skip `pip install -e .[test]` when the imports already work.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# make: .ci/run and the README drive everything through the Makefile.
DEB_PACKAGES=(docker.io dnsutils dnsperf busybox-static debootstrap chromium iproute2 procps make systemd
    prometheus)

log() { printf 'setup: %s\n' "$*" >&2; }

missing_packages() {
    local pkg status
    for pkg in "${DEB_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "installed" ]] || printf '%s\n' "$pkg"
    done
}

install_debian_packages() {
    local -a missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    if [[ "$(id -u)" != 0 ]]; then
        log "missing Debian packages: ${missing[*]} (run as root to install them)"
        return 1
    fi
    log "installing Debian packages: ${missing[*]}"
    # Keep docker.io's postinst from starting a system-wide dockerd (with docker0 and
    # iptables rules): the tests start their own private engine. Only if no policy exists.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local aptlog rc=0
    aptlog=$(mktemp /tmp/ecssd-apt.XXXXXX)
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q &&
            apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >"$aptlog" 2>&1 || rc=$?
    ((added_policy)) && rm -f "$policy"
    if ((rc != 0)); then
        log "apt-get failed (exit $rc); last lines of $aptlog:"
        tail -n 30 "$aptlog" >&2
        return "$rc"
    fi
    rm -f "$aptlog"
}

install_python_package() {
    if [[ "${ECSSD_SKIP_PIP:-0}" == 1 ]] &&
        python3 -c 'import ecssd_agent, moto, pytest, dns' 2>/dev/null; then
        return 0
    fi
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
}

install_debian_packages
install_python_package
