#!/usr/bin/env bash
# The package as a user installs it (run by .ci/run): build the sdist and the wheel (the build must
# print no deprecation warning), check that the sdist holds the tests, docs, tutorials, configs
# and LICENSE, install the wheel into a fresh venv outside the checkout, and from a folder outside
# it run the README's commands by config name: `tokensel configs`, `tokensel eval shapes`,
# `tokensel sweep shapes-ablation` and a small `tokensel demo`.
#
# Nothing large downloads: the venv reads this environment's packages (torch, transformers, ...)
# through a .pth file naming their site-packages folder. Unlike --system-site-packages, a path
# added by a .pth does not run that folder's own .pth files, so an editable tokensel installed
# there cannot shadow the wheel (the script checks where tokensel is imported from).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tokensel-wheel-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "== build (sdist, wheel) in $work/dist"
# the build writes build/ and tokensel.egg-info/ into the checkout: remove them only if it made them
made=()
for d in build tokensel.egg-info; do [ -e "$repo/$d" ] || made+=("$repo/$d"); done
(cd "$repo" && python -W always - "$work/dist" >"$work/build.log" 2>&1 <<'EOF'
import sys
from setuptools import build_meta
out = sys.argv[1]
print(build_meta.build_sdist(out))
print(build_meta.build_wheel(out))
EOF
) || { cat "$work/build.log"; exit 1; }
[ ${#made[@]} -eq 0 ] || rm -rf "${made[@]}"
if grep "SetuptoolsDeprecationWarning" "$work/build.log"; then
  echo "check_wheel: the build printed setuptools deprecation warnings (above)" >&2
  exit 1
fi
sdist=$(ls "$work"/dist/tokensel-*.tar.gz)
wheel=$(ls "$work"/dist/tokensel-*.whl)
tar -tzf "$sdist" > "$work/sdist.txt"
for member in LICENSE README.md mkdocs.yml tests/conftest.py tests/docs/test_site.py docs/index.md \
              notebooks/01_quickstart.py tokensel/experiments/configs/shapes.yaml \
              tokensel/experiments/configs/sweeps/shapes_ablation.yaml; do
  grep -q "^tokensel-[^/]*/$member\$" "$work/sdist.txt" || { echo "check_wheel: the sdist lacks $member" >&2; exit 1; }
done
python - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["tokensel/experiments/configs/shapes.yaml", "tokensel/experiments/configs/sweeps/shapes_ablation.yaml",
        "tokensel/experiments/configs/demo_sweep.yaml", "tokensel/zoo/weights/shapes-llava/SHA256SUMS"]
missing = [n for n in need if n not in names]
licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
assert not missing, f"the wheel lacks {missing}"
assert licenses, "the wheel has no dist-info/licenses/LICENSE"
print(f"wheel: {len(names)} files, configs, weights and LICENSE present")
EOF

echo "== fresh venv outside the checkout"
python -m venv "$work/venv"
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" > "$site/host-packages.pth"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$wheel"
mkdir "$work/user" && cd "$work/user"
"$work/venv/bin/python" - <<'EOF'
import tokensel, sys
assert tokensel.__file__.startswith(sys.prefix), f"tokensel imported from {tokensel.__file__}, not the venv's wheel"
print("tokensel from", tokensel.__file__)
EOF
export PATH="$work/venv/bin:$PATH"
run() { echo "\$ $*"; local t0=$SECONDS; "$@"; echo "  ($((SECONDS - t0)) s)"; }
run tokensel configs > configs.txt
grep -q "shapes-ablation" configs.txt
run tokensel eval shapes selector.name=random budget.k=16 dataset.limit=8 dataset.generate_images=4 eval.batch_size=8 \
    logging.wandb_mode=disabled eval.progress=false
ls runs/*/metrics.json >/dev/null
run tokensel sweep shapes-ablation 'grid.selector.name=[mmtok,divprune]' 'grid.budget.k=[16]' '~grid.selector.params.alpha' \
    '~grid.selector.params.layer' 'overrides=[dataset.limit=8,dataset.generate_images=4,logging.wandb_mode=disabled,eval.progress=false]'
test "$(ls -d runs/shapes-ablation/*/ | wc -l)" -ge 2
run tokensel demo --num-samples 8 --budgets 8,16 --selectors mmtok,random --out demo-out
for f in results.csv results.json accuracy_vs_k.png accuracy_vs_mean_kept.png kept_tokens.png; do
  test -s "demo-out/$f" || { echo "check_wheel: the demo wrote no $f" >&2; exit 1; }
done
echo "check_wheel: OK (wheel installed outside the checkout; eval, sweep and demo ran by config name)"
