#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, into the repository, and prints
# the bin directory to put on PATH. Today that is moto, an independent implementation of part
# of the SSM and EC2 APIs, for crates/fleet-sim/tests/moto_conformance.rs, and, when
# PATCHD_INSTALL_CHROMIUM=1, Debian's chromium, which tests/evidence.rs renders the evidence
# report in (that test skips without it unless PATCHD_REQUIRE_CHROMIUM=1), and, when
# PATCHD_INSTALL_PROMTOOL=1, Debian's prometheus package for its promtool, which checks and
# unit-tests deploy/prometheus/alerts.yml (tests/observability.rs skips that without it unless
# PATCHD_REQUIRE_PROMTOOL=1).
#
#   PATH="$(.ci/install-test-deps.sh):$PATH"
#
# Idempotent: a venv that already holds the pinned version is left alone, so a second run
# costs milliseconds (a first one about a minute). Everything but the final path goes to
# stderr. Needs python3 (3.9 or newer, with its venv module; set PYTHON to use another
# interpreter) and access to PyPI.
set -euo pipefail

# Pinned so that a moto release cannot change what the independent implementation answers
# between two CI runs; bump it deliberately and rerun the conformance tests.
MOTO_VERSION="5.2.5"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# PATCHD_TEST_VENV lets a runner that clones the repository afresh each time keep one venv
# outside the clone instead of paying for a full install on every run.
venv="${PATCHD_TEST_VENV:-$repo/.venv}"
bin="$venv/bin"
stamp="$venv/.patchd-test-deps"
want="moto[server]==$MOTO_VERSION"
python="${PYTHON:-python3}"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

# Chromium is a system package, not something a venv can hold, so it goes through apt (the CI
# image runs as root). It is opt-in because it costs a few hundred megabytes and a minute or
# two; done before moto's fast path below so that a runner with moto cached still gets it.
if [[ "${PATCHD_INSTALL_CHROMIUM:-}" == 1 && ! -x /usr/bin/chromium ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "PATCHD_INSTALL_CHROMIUM=1 needs apt-get (Debian or Ubuntu); install chromium yourself"
        exit 1
    fi
    log "installing chromium with apt-get"
    started=$SECONDS
    # stdout too goes to stderr: this script's stdout is the bin path and nothing else.
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2
    "/usr/bin/chromium" --version >&2
    log "chromium installed in $((SECONDS - started)) s"
fi

# promtool, likewise a system package: Debian ships it in `prometheus` (the server comes along
# but is not started here: the CI image has no init system, and nothing here enables it).
if [[ "${PATCHD_INSTALL_PROMTOOL:-}" == 1 ]] && ! command -v promtool >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "PATCHD_INSTALL_PROMTOOL=1 needs apt-get (Debian or Ubuntu); install promtool yourself"
        exit 1
    fi
    log "installing prometheus (for promtool) with apt-get"
    started=$SECONDS
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2
    promtool --version >&2
    log "promtool installed in $((SECONDS - started)) s"
elif [[ "${PATCHD_INSTALL_PROMTOOL:-}" == 1 ]]; then
    log "promtool already installed: $(command -v promtool)"
fi

if [[ -x "$bin/moto_server" && -f "$stamp" && "$(<"$stamp")" == "$want" ]] && "$bin/python" -c '' 2>/dev/null; then
    printf '%s\n' "$bin"
    exit 0
fi

# A venv whose interpreter no longer runs (an interrupted creation, a removed python) is
# rebuilt; a working one is kept, with whatever else a developer installed in it.
if ! "$bin/python" -c '' 2>/dev/null; then
    if ! command -v "$python" >/dev/null 2>&1; then
        log "$python not found: install python 3.9 or newer with its venv module, or set PYTHON"
        exit 1
    fi
    log "creating $venv"
    if ! "$python" -m venv --clear "$venv" >&2; then
        log "'$python -m venv' failed: on Debian install python3-venv, or set PYTHON to another python"
        exit 1
    fi
fi

log "installing $want into $venv"
"$bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$want" >&2
# The stamp is written only once moto_server starts, so a failed install is retried next time.
"$bin/moto_server" --help >/dev/null
printf '%s\n' "$want" >"$stamp"
printf '%s\n' "$bin"
