#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root, before the device call:
#   bash benchmarks/gpu/prepare.sh [BUSI_ROOT]
# 1. downloads the Python 3.12 wheels the GPU image lacks into .whl/ (hydra, omegaconf,
#    albumentations and their small dependencies; torch, lightning, torchmetrics, scipy and
#    scikit-learn are already there);
# 2. writes a grayscale copy of BUSI benign + malignant (images and masks, original names and
#    layout) into .busi/ so that it fits the device tool's 64 MiB transfer.
# Both folders are git-ignored through .git/info/exclude: they never enter the repository.
set -euo pipefail
busi="${1:-../shared/data/busi/Dataset_BUSI_with_GT}"
[ -d "$busi/benign" ] && [ -d "$busi/malignant" ] || {
  echo "prepare.sh: no BUSI at $busi (benign/ and malignant/ expected); pass its folder" >&2; exit 1; }
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && py="${PYTHON:-.venv/bin/python}"
touch .git/info/exclude
grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
grep -qx "/.busi/" .git/info/exclude || echo "/.busi/" >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .whl hydra-core==1.3.2 omegaconf==2.3.0 albumentations==2.0.8 albucore==0.0.24 \
  imagehash==4.3.2 pywavelets==1.9.0 pydantic==2.11.7 pydantic-core==2.33.2 annotated-types==0.7.0 \
  typing-inspection==0.4.1 simsimd==6.5.0 stringzilla==3.12.6
# omegaconf needs antlr4 4.9.x, published as a pure-Python source archive only.
"$py" -m pip download -q --no-deps --no-binary=:all: -d .whl antlr4-python3-runtime==4.9.3
"$py" - "$busi" <<'PY'
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(".busi/Dataset_BUSI_with_GT")
for cls in ("benign", "malignant"):
    (dst / cls).mkdir(parents=True, exist_ok=True)
    for f in sorted((src / cls).glob("*.png")):
        Image.open(f).convert("L").save(dst / cls / f.name, optimize=True)
print("wrote", sum(1 for _ in dst.rglob("*.png")), "files to", dst)
PY
du -sh .whl .busi
