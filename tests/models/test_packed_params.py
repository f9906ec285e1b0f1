"""Packed parameter files (models.packed_params): exact headers, bounded rounding, and a packed folder that loads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from models.integrity import ModelIntegrityError, verify_model_dir, write_sha256sums
from models.packed_params import _tensors, pack, unpack

PARAMS = "inference.pdiparams"


def test_pack_keeps_every_header_and_rounds_within_half_a_step(tiny_kie_dirs, tmp_path):
    src = tiny_kie_dirs[0] / PARAMS
    # Thresholds low enough that the tiny model has tensors of all three kinds (the vocabulary table is 402 x 48).
    packed = pack(src, tmp_path / "p.packed", q4_min_rows=400, q8_min_size=4096)
    out = unpack(packed, tmp_path / PARAMS)
    before, after = _tensors(src.read_bytes()), _tensors(out.read_bytes())
    assert len(before) == len(after)
    kinds = set()
    for (h1, dtype, dims, raw1), (h2, _, _, raw2) in zip(before, after):
        assert h1 == h2
        if dtype != 5 or len(dims) != 2:
            assert raw1 == raw2
            continue
        a, b = np.frombuffer(raw1, "<f4").reshape(dims), np.frombuffer(raw2, "<f4").reshape(dims)
        if dims[0] > 400:  # 4-bit blocks of 32: at most half a step of amax / 7, plus the fp16 scale's rounding
            step = np.abs(a.reshape(-1, 32)).max(1, keepdims=True) / 7
            assert (np.abs(a - b).reshape(-1, 32) <= step * 0.5 + 1e-3 * step + 1e-12).all()
            kinds.add("q4")
        elif a.size >= 4096:  # int8 rows: at most half a step of amax / 127
            step = np.abs(a).max(1, keepdims=True) / 127
            assert (np.abs(a - b) <= step * 0.5 * (1 + 1e-5)).all()
            kinds.add("q8")
        else:
            assert raw1 == raw2
            kinds.add("raw")
    assert kinds == {"q4", "q8", "raw"}
    assert packed.stat().st_size < 0.5 * src.stat().st_size


def test_a_folder_with_only_the_packed_file_unpacks_when_verified_and_when_loaded(tiny_kie_dirs, tmp_path):
    from models.kie import KiePredictor

    folder = tmp_path / "ser"
    shutil.copytree(tiny_kie_dirs[0], folder)
    pack(folder / PARAMS, q4_min_rows=400, q8_min_size=4096)
    unpack(folder / (PARAMS + ".packed"), folder / PARAMS)
    write_sha256sums(folder)  # pins the packed file and the unpacked one it must turn back into
    want = (folder / PARAMS).read_bytes()
    (folder / PARAMS).unlink()
    verify_model_dir(folder)  # unpacks the listed, missing parameter file, then checks its sum
    assert (folder / PARAMS).read_bytes() == want
    (folder / PARAMS).unlink()
    kie = KiePredictor.from_dirs(folder)
    assert (folder / PARAMS).is_file() and kie is not None


def test_a_packed_file_that_does_not_unpack_to_the_pinned_sum_is_refused(tiny_kie_dirs, tmp_path):
    folder = tmp_path / "ser"
    shutil.copytree(tiny_kie_dirs[0], folder)
    pack(folder / PARAMS, q4_min_rows=400, q8_min_size=4096)
    write_sha256sums(folder)  # pins the float32 original, which the rounding of the packed file cannot give back
    (folder / PARAMS).unlink()
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        verify_model_dir(folder)


def test_unpack_refuses_a_file_that_is_not_packed(tmp_path):
    (tmp_path / "x.packed").write_bytes(b"not a packed file")
    with pytest.raises(ValueError, match="not a packed parameter file"):
        unpack(tmp_path / "x.packed", tmp_path / "x")


def test_rounded_gives_the_values_a_pack_and_unpack_give(tiny_kie_dirs, tmp_path):
    from models.packed_params import rounded

    src = tiny_kie_dirs[0] / PARAMS
    out = unpack(pack(src, tmp_path / "p.packed", q4_min_rows=400, q8_min_size=4096), tmp_path / PARAMS)
    for (_, dtype, dims, raw), (_, _, _, want) in zip(_tensors(src.read_bytes()), _tensors(out.read_bytes())):
        if dtype == 5:
            values = np.frombuffer(raw, "<f4").reshape(dims)
            got = rounded(values, q4_min_rows=400, q8_min_size=4096)
            assert got.tobytes() == want
            assert rounded(got, q4_min_rows=400, q8_min_size=4096).tobytes() == want  # a second rounding: no change


def test_the_bundled_model_as_the_repository_holds_it_stays_under_the_size_limits():
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[2] / "models" / "assets" / "default_kie"
    ignored = {bundle / "ser" / PARAMS} if (bundle / "ser" / (PARAMS + ".packed")).is_file() else set()
    files = [f for f in bundle.rglob("*") if f.is_file() and f not in ignored]  # the unpacked file is not committed
    sizes = {str(f.relative_to(bundle)): f.stat().st_size for f in files}
    assert max(sizes.values()) < 15_000_000, sizes
    assert sum(sizes.values()) < 30_000_000, sizes
