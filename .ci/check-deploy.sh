#!/usr/bin/env bash
# Checks the systemd artifacts under deploy/: `systemd-analyze verify` on patchd.service
# (any diagnostic about the unit is a failure: verify itself exits 0 on unknown keys and bad
# values), its `systemd-analyze security` exposure against a ceiling, and the sysusers file.
#
# Installs the `systemd` package when systemd-analyze is missing and this runs as root with
# apt-get; otherwise it prints why it skips and exits 0. With PATCHD_REQUIRE_SYSTEMD=1 (CI sets
# it) every skip is a failure instead, the patchd binary's included: a check that silently
# does not run proves nothing. The IAM policy is checked by
# `cargo test -p patchd-aws --test iam_policy`.
set -euo pipefail
cd "$(dirname "$0")/.."

required=${PATCHD_REQUIRE_SYSTEMD:-}
# Prints why a check does not run; fails the script when skips are not allowed.
skip() {
    if [ "$required" = 1 ]; then
        echo "FAIL: PATCHD_REQUIRE_SYSTEMD=1 but $*"
        exit 1
    fi
    echo "skip: $*"
}

UNIT=deploy/patchd.service
SYSUSERS=deploy/patchd.sysusers.conf
# Exposure ceiling in tenths (systemd-analyze's --threshold unit): 20 = 2.0, the top of "OK".
EXPOSURE_CEILING=20

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "systemd-analyze is missing; installing the systemd package"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
    fi
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    skip "systemd-analyze is not available and cannot be installed here (needs root and apt-get); $UNIT not verified"
    exit 0
fi
echo "$(systemd-analyze --version | head -n 1)"

# verify needs the unit's executables and the standard targets: check against a scratch root
# holding the system's unit files, the unit, and a stand-in for the patchd binary.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
units=
for dir in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -d "$dir" ]; then units=$dir; break; fi
done
if [ -z "$units" ]; then
    skip "no systemd unit directory on this machine; $UNIT not verified"
    exit 0
fi
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
cp -a "$units" "$root/usr/lib/systemd/system"
cp "$UNIT" "$root/etc/systemd/system/patchd.service"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/patchd"
chmod 0755 "$root/usr/local/bin/patchd"

echo "== systemd-analyze verify $UNIT"
status=0
output=$(systemd-analyze verify --root="$root" patchd.service 2>&1) || status=$?
# Lines about other units come from this machine's unit files, not from ours.
ours=$(printf '%s\n' "$output" | grep -i 'patchd' || true)
others=$(printf '%s\n' "$output" | grep -vi 'patchd' | grep -v '^$' || true)
[ -z "$others" ] || printf 'note (not about patchd.service):\n%s\n' "$others"
if [ "$status" != 0 ] || [ -n "$ours" ]; then
    printf '%s\n' "${ours:-systemd-analyze verify exited $status}"
    echo "FAIL: $UNIT does not verify cleanly"
    exit 1
fi
echo "ok: no diagnostics"

echo "== systemd-analyze security --offline=yes $UNIT"
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    report=$(systemd-analyze security --offline=yes --no-pager "$UNIT" 2>&1) || true
    printf '%s\n' "$report" | grep -F -e '✗' -e 'Overall exposure' || true
    if ! systemd-analyze security --offline=yes --threshold="$EXPOSURE_CEILING" --no-pager "$UNIT" >/dev/null 2>&1; then
        echo "FAIL: $UNIT's exposure is above $((EXPOSURE_CEILING / 10)).$((EXPOSURE_CEILING % 10))"
        exit 1
    fi
else
    skip "this systemd-analyze has no --offline (systemd < 250); exposure not measured"
fi

echo "== systemd-sysusers $SYSUSERS"
if command -v systemd-sysusers >/dev/null 2>&1; then
    users=$(mktemp -d)
    mkdir -p "$users/etc"
    systemd-sysusers --root="$users" "$PWD/$SYSUSERS" >/dev/null 2>&1 || { echo "FAIL: $SYSUSERS"; exit 1; }
    grep -q '^patchd:' "$users/etc/passwd" || { echo "FAIL: $SYSUSERS creates no patchd user"; exit 1; }
    user=$(sed -n 's/^User=//p' "$UNIT")
    [ "$user" = patchd ] || { echo "FAIL: $UNIT runs as '$user', $SYSUSERS creates 'patchd'"; exit 1; }
    rm -rf "$users"
    echo "ok: creates the patchd user the unit runs as"
else
    skip "systemd-sysusers is not available; $SYSUSERS not checked"
fi

patchd=${PATCHD_BIN:-target/debug/patchd}
for manifest in deploy/sidecar.yaml deploy/ha.yaml deploy/patchd-ha.toml; do
    echo "== the configuration in $manifest"
    if [ ! -x "$patchd" ]; then
        skip "no patchd binary at $patchd (build it first, or set PATCHD_BIN); $manifest not checked"
        continue
    fi
    conf=$(mktemp -d)
    case "$manifest" in
        # A ConfigMap's `patchd.toml: |` block, unindented.
        *.yaml) awk '/^  patchd.toml: \|$/ {on = 1; next} on && /^---/ {exit} on {sub(/^    /, ""); print}' "$manifest" ;;
        *) cat "$manifest" ;;
    esac | sed -e "s|/var/run/secrets/patchd/token|$conf/token|" -e "s|/etc/patchd/api.token|$conf/token|" >"$conf/patchd.toml"
    # The token file it names, stood in for.
    echo stand-in >"$conf/token"
    [ -s "$conf/patchd.toml" ] || { echo "FAIL: no patchd.toml found in $manifest"; exit 1; }
    "$patchd" check --config "$conf/patchd.toml" >/dev/null || { echo "FAIL: $manifest's configuration is invalid"; exit 1; }
    rm -rf "$conf"
    echo "ok: valid"
done
