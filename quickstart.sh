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
# PyPI's torch 2.8.0 for x86_64 is the CUDA build: its venv takes ~7.5 GB (4.1 GB of it nvidia-*).
DEFAULT_STACK=(torch==2.8.0 torchaudio==2.8.0)
DEFAULT_GB=10
# The newer stack, supported through recycle_distill.s3prl.compat on the S3PRL-facing paths.
COMPAT_STACK=(torch==2.13.0 torchaudio==2.11.0)
COMPAT_GB=3
# Tests whose bounds are float32 summation error (students against the reference, fast blocks
# against plain ones, the CIF in float32, inference): `test` runs them at
# OMP_NUM_THREADS=1 and 2 as well as in the full run (docs/development.md, "Tests").
THREAD_SENSITIVE=(tests/students/test_fidelity.py tests/students/test_long_inputs.py
  tests/students/test_map_free_reuse.py tests/downstreams/test_cif.py tests/downstreams/test_cif_float32.py
  tests/inference)

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

pip_install() {  # pip_install PYTHON ARGS...: pip showing its downloads; its failure stops the script with its exit code
  local py=$1; shift
  set +e
  # --no-cache-dir: the default stack's wheels are ~4 GB; a cached copy would double the peak disk use.
  # stdout stays the terminal (fd 3), so pip draws a progress bar per download; only stderr is filtered.
  { "$py" -m pip install --no-cache-dir --progress-bar on "$@" 2>&1 1>&3 3>&- | grep -v '^WARNING: Location' >&2; } 3>&1
  local code=${PIPESTATUS[0]}
  set -e
  if [ "$code" -ne 0 ]; then echo "ERROR: pip install $* failed (exit $code)" >&2; return "$code"; fi
}

need_disk() {  # need_disk DIR GB: fail at once, with the figures, when the disk cannot hold DIR
  local dir=$1 need=$2 free
  free=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "$free" -lt "$need" ]; then
    echo "ERROR: $free GB free on $(df -P . | awk 'NR == 2 { print $6 }'); creating $dir needs about $need GB" >&2
    return 1
  fi
}

make_venv() {  # make_venv DIR GB STACK...
  local dir=$1 gb=$2; shift 2
  local stamp="$dir/.recycle-distill-stack"
  local want="$* $(sha256sum setup.py | cut -c1-16)"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    pip_install "$dir/bin/python" -q --no-deps -e .
    return
  fi
  need_disk "$dir" "$gb"
  log "creating $dir with $*"
  "$PYTHON" -m venv "$dir"
  pip_install "$dir/bin/python" -q --upgrade pip
  log "downloading and installing $* and the extras (the default stack's torch wheels alone are ~4 GB)"
  pip_install "$dir/bin/python" "$@" -e ".[test,demo,hf,onnx]"
  "$dir/bin/python" -c "import torch, torchaudio, s3prl, recycle_distill" 2>/dev/null \
    || "$dir/bin/python" -c "import recycle_distill.s3prl.compat as c; c.apply_compat(); import s3prl.hub"
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
    make_venv "$VENV" "$DEFAULT_GB" "${DEFAULT_STACK[@]}"
    log "running the main job"
    "$VENV/bin/recycle-distill" demo "$@"
    ;;
  test)
    shift
    install_espeak required
    make_venv "$VENV" "$DEFAULT_GB" "${DEFAULT_STACK[@]}"
    log "test suite on the default stack (torch 2.8.0 + torchaudio 2.8.0 + s3prl 0.4.18)"
    run_pytest "$VENV" tests -ra "$@"
    # Float32 sums split across threads round differently, so the numerically sensitive tests
    # run again at 1 and 2 threads (skipping the count the full run already used).
    local_threads=$("$VENV/bin/python" -c "import torch; print(torch.get_num_threads())")
    for threads in 1 2; do
      if [ "$threads" = "$local_threads" ]; then continue; fi
      log "numerically sensitive tests at OMP_NUM_THREADS=$threads (the full run used $local_threads)"
      OMP_NUM_THREADS=$threads run_pytest "$VENV" "${THREAD_SENSITIVE[@]}" -k "not ten_minutes" -ra "$@"
    done
    if [ "${SKIP_COMPAT:-0}" != 1 ]; then
      make_venv "$COMPAT_VENV" "$COMPAT_GB" "${COMPAT_STACK[@]}"
      log "S3PRL-facing and ONNX tests on the compat stack (torch 2.13.0 + torchaudio 2.11.0)"
      run_pytest "$COMPAT_VENV" tests -m "s3prl or onnx" -ra "$@"
    fi
    ;;
  *)
    echo "usage: bash quickstart.sh demo|test [extra args]" >&2
    exit 2
    ;;
esac
