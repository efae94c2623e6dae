#!/usr/bin/env bash
# One command per job on a fresh machine:
#   bash quickstart.sh demo   # set everything up, then run the main job (the offline demo)
#   bash quickstart.sh test   # set everything up, then run the whole test suite (what CI runs)
# Environment: PYTHON (default python3), VENV (default .venv), COMPAT_VENV (default .venv-compat),
# SKIP_COMPAT=1 to skip the second (torch 2.13 + torchaudio 2.11) stack in `test`.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
COMPAT_VENV=${COMPAT_VENV:-.venv-compat}
# The default, pinned and fully tested stack: S3PRL 0.4.18 runs on it unmodified.
DEFAULT_STACK=(torch==2.8.0 torchaudio==2.8.0)
# The newer stack, supported through recycle_distill.compat on the S3PRL-facing paths.
COMPAT_STACK=(torch==2.13.0 torchaudio==2.11.0)

log() { printf '\n==> %s\n' "$*"; }

install_espeak() {
  if command -v espeak-ng >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing espeak-ng (real speech for the demo and tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
      || if [ "${1:-}" = required ]; then echo "ERROR: could not install espeak-ng as root (the tests need real speech)" >&2; return 1
         else echo "WARNING: could not install espeak-ng; the demo falls back to synthetic audio"; fi
  else
    echo "WARNING: espeak-ng is not installed and this user cannot install it;" \
         "the demo and tests fall back to synthetic audio"
  fi
}

make_venv() {  # make_venv DIR STACK...
  local dir=$1; shift
  local stamp="$dir/.recycle-distill-stack"
  local want="$* $(sha256sum setup.py | cut -c1-16)"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    "$dir/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
    return
  fi
  log "creating $dir with $*"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$dir/bin/python" -m pip install -q "$@" -e ".[test,demo,hf,onnx]" 2>&1 | grep -v '^WARNING: Location' || true
  "$dir/bin/python" -c "import torch, torchaudio, s3prl, recycle_distill" 2>/dev/null \
    || "$dir/bin/python" -c "import recycle_distill.compat as c; c.apply_compat(); import s3prl.hub"
  echo "$want" > "$stamp"
}

run_pytest() {  # run_pytest VENV ARGS...: pytest's exit code 5 (no tests collected) is a failure
  local dir=$1; shift
  set +e
  "$dir/bin/python" -m pytest "$@"
  local code=$?
  set -e
  if [ $code -eq 5 ]; then echo "ERROR: pytest collected no tests"; return 1; fi
  return $code
}

case "${1:-}" in
  demo)
    shift
    install_espeak
    make_venv "$VENV" "${DEFAULT_STACK[@]}"
    log "running the main job"
    "$VENV/bin/recycle-distill" demo "$@"
    ;;
  test)
    shift
    install_espeak required
    make_venv "$VENV" "${DEFAULT_STACK[@]}"
    log "test suite on the default stack (torch 2.8.0 + torchaudio 2.8.0 + s3prl 0.4.18)"
    run_pytest "$VENV" tests -ra "$@"
    if [ "${SKIP_COMPAT:-0}" != 1 ]; then
      make_venv "$COMPAT_VENV" "${COMPAT_STACK[@]}"
      log "S3PRL-facing and ONNX tests on the compat stack (torch 2.13.0 + torchaudio 2.11.0)"
      run_pytest "$COMPAT_VENV" tests -m "s3prl or onnx" -ra "$@"
    fi
    ;;
  *)
    echo "usage: bash quickstart.sh demo|test [extra args]" >&2
    exit 2
    ;;
esac
