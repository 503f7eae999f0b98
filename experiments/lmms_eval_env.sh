#!/usr/bin/env bash
# Builds (once) a virtual environment with lmms-eval 0.7.3 next to this environment and prints
# its python. Used by .ci/run and by tests/experiments/test_lmms_eval_harness.py.
#
#   bash experiments/lmms_eval_env.sh [DIR]
#
# The venv reuses the calling python's packages (torch, transformers, tokensel itself: a .pth
# file adds that python's site-packages after the venv's own, .pth files included, so an editable
# tokensel install is seen too); lmms-eval is installed without its dependency pins (they would
# pull a CUDA torch and torchvision), then the packages it imports on this path, and filelock<4
# (filelock 4 breaks it). Packages installed in the venv shadow the outer ones for lmms-eval only.
# DIR defaults to $TOKENSEL_LMMS_VENV, else a cache folder keyed by the lmms-eval, python and torch
# versions and the outer environment; a finished build is stamped and reused.
set -euo pipefail
PY=${PYTHON:-python}
LMMS_EVAL_VERSION=0.7.3
DEPS=("filelock<4" loguru pytz accelerate sacrebleu evaluate tenacity pytablewriter)

key=$("$PY" - "$LMMS_EVAL_VERSION" "${DEPS[*]}" <<'EOF'
import hashlib, site, sys, torch
outer = "|".join(site.getsitepackages())
tag = hashlib.sha256(f"{sys.prefix}|{outer}|{sys.argv[2]}".encode()).hexdigest()[:10]
print(f"lmms-eval{sys.argv[1]}-py{sys.version_info[0]}.{sys.version_info[1]}-torch{torch.__version__}-{tag}")
EOF
)
DIR=${1:-${TOKENSEL_LMMS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensel/$key}}
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9  # one build at a time (parallel test runs share the folder)
if [[ -f "$DIR/.tokensel-ready" && "$(cat "$DIR/.tokensel-ready")" == "$key" ]]; then
  echo "$DIR/bin/python"
  exit 0
fi
rm -rf "$DIR"
"$PY" -m venv "$DIR" >&2
"$PY" - "$DIR" <<'EOF'
import pathlib, site, subprocess, sys
inner = subprocess.run([f"{sys.argv[1]}/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       check=True, capture_output=True, text=True).stdout.strip()
lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages())
pathlib.Path(inner, "_tokensel_outer_env.pth").write_text(lines)
EOF
log="$DIR.log"  # pip's output (its resolver lists lmms-eval's unmet pins: expected, they are skipped)
pip=("$DIR/bin/python" -m pip install --disable-pip-version-check)
if ! { "${pip[@]}" --no-deps "lmms-eval==$LMMS_EVAL_VERSION" && "${pip[@]}" "${DEPS[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "lmms_eval_env.sh: installing lmms-eval into $DIR failed (log above, kept in $log)" >&2
  exit 1
fi
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
"$DIR/bin/python" -c "import lmms_eval.__main__, torch, tokensel; assert torch.__version__ == '$torch_version', torch.__version__" >&2
echo "$key" > "$DIR/.tokensel-ready"
echo "$DIR/bin/python"
