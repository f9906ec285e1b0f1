"""Backend and precision choice (forced capabilities), the OpenVINO backend on the bundled PP-OCRv4 folders, bf16 and
TensorRT configuration with their fallbacks on this CPU-only build of Paddle."""

from __future__ import annotations

import logging
import shutil
import threading

import numpy as np
import pytest

from models.backends import Runtime, resolve_runtime
from models.capabilities import Capabilities, detect_capabilities, mkl_cpu_type, read_cpu_flags
from models.features import MODEL_INPUTS
from models.integrity import ModelIntegrityError
from models.openvino_infer import OpenVinoPredictor, openvino_config
from models.paddle_infer import InferenceOptions, PaddlePredictor, kie_trt_shapes, paddle_config
from models.predictors import create_predictor
from models.text_detector import DbParams, det_trt_shapes
from models.text_recognizer import rec_trt_shapes

AMD = Capabilities(frozenset({"avx2", "fma"}), openvino=True)  # this project's 2-core EPYC
AMX = Capabilities(frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}), openvino=True)
GPU_TRT = Capabilities(frozenset({"avx2"}), cuda_devices=1, tensorrt=True, openvino=True)
GPU_NO_TRT = Capabilities(frozenset({"avx2"}), cuda_devices=1, openvino=True,
                          why_no_tensorrt="Paddle was built without TensorRT")
NO_GPU = Capabilities(frozenset({"avx2"}), openvino=True, why_no_gpu="paddlepaddle 3.3.1 is a CPU build")

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_flags_are_read_from_cpuinfo_text():
    flags = read_cpu_flags(CPUINFO)
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= flags and "vendor_id" not in flags
    assert detect_capabilities(CPUINFO).bf16
    assert not detect_capabilities("flags : fpu avx2 fma\n").bf16
    assert read_cpu_flags("no flags line here") == frozenset()
    assert AMX.isa().startswith("avx2 fma avx512f") and "amx_bf16" in AMX.isa()


def test_mkl_gets_its_avx2_kernels_on_amd_only():
    assert mkl_cpu_type("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 fma\n") == "5"
    assert mkl_cpu_type("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse\n") is None  # no AVX2: MKL's own choice
    assert mkl_cpu_type(CPUINFO) is None  # Intel: MKL already picks its fast kernels


@pytest.mark.parametrize("caps, options, role, want, note", [
    # CPU without bf16: auto is fp32 everywhere; OCR on OpenVINO (pdmodel folders)
    (AMD, {}, "ser", "paddle/cpu/fp32", None),
    (AMD, {}, "re", "paddle/cpu/fp32", None),
    (AMD, {}, "det", "openvino/cpu/fp32", None),
    (AMD, {}, "rec", "openvino/cpu/fp32", None),
    (AMD, {"precision": "bf16"}, "ser", "paddle/cpu/fp32", "none of avx512_bf16, amx_bf16"),
    (AMD, {"precision": "fp16"}, "rec", "openvino/cpu/fp32", "TensorRT on GPU only"),
    # CPU with AMX: auto is bf16 for SER/RE only; the DB detector never runs bf16 on Paddle
    (AMX, {}, "ser", "paddle/cpu/bf16", None),
    (AMX, {}, "re", "paddle/cpu/bf16", None),
    (AMX, {}, "det", "openvino/cpu/fp32", None),
    (AMX, {}, "model", "paddle/cpu/fp32", None),
    (AMX, {"enable_mkldnn": False}, "ser", "paddle/cpu/fp32", None),
    (AMX, {"precision": "bf16", "backend": "paddle"}, "det", "paddle/cpu/fp32", "fails on the DB detector"),
    (AMX, {"precision": "bf16", "backend": "paddle"}, "rec", "paddle/cpu/bf16", None),
    (AMX, {"precision": "bf16"}, "det", "openvino/cpu/bf16", None),
    (AMX, {"precision": "fp32"}, "ser", "paddle/cpu/fp32", None),
    # backends
    (AMD, {"backend": "paddle"}, "rec", "paddle/cpu/fp32", None),
    (Capabilities(frozenset({"avx2"})), {"backend": "openvino"}, "rec", "paddle/cpu/fp32", "not installed"),
    (AMD, {"backend": "openvino"}, "ser", "paddle/cpu/fp32", "detection and recognition only"),
    # GPU: TensorRT fp16 where Paddle has it; a missing TensorRT or GPU falls back with one line
    (GPU_TRT, {"device": "gpu"}, "det", "paddle/gpu/trt-fp16", None),
    (GPU_TRT, {"device": "gpu"}, "ser", "paddle/gpu/trt-fp16", None),
    (GPU_TRT, {"device": "gpu", "backend": "openvino"}, "rec", "paddle/gpu/trt-fp16", "CPU only"),
    (GPU_TRT, {"device": "gpu", "use_tensorrt": False}, "rec", "paddle/gpu/fp32", None),
    (GPU_TRT, {"device": "gpu", "precision": "bf16"}, "ser", "paddle/gpu/fp32", "bf16 is a CPU precision"),
    (GPU_NO_TRT, {"device": "gpu"}, "re", "paddle/gpu/fp32", "built without TensorRT"),
    (GPU_NO_TRT, {"device": "gpu", "precision": "fp16"}, "det", "paddle/gpu/fp32", "TensorRT unavailable"),
    (NO_GPU, {"device": "gpu"}, "ser", "paddle/cpu/fp32", "no usable GPU (paddlepaddle 3.3.1 is a CPU build)"),
    (NO_GPU, {"device": "gpu"}, "det", "openvino/cpu/fp32", "no usable GPU"),
])
def test_runtime_choice_by_forced_capabilities(ocr_model_dirs, caps, options, role, want, note):
    folder = ocr_model_dirs[0] if role in ("det", "rec") else None
    runtime = resolve_runtime(InferenceOptions(**options), role, folder, caps)
    assert runtime.label() == want
    if note is None:
        assert runtime.notes == ()
    else:
        assert len(runtime.notes) == 1 and note in runtime.notes[0] and runtime.notes[0].startswith(f"{role}: ")


def test_pir_folders_fall_back_to_paddle_with_one_line(tiny_kie_dirs, tmp_path):
    ser_dir = tiny_kie_dirs[0]  # a Paddle 3 PIR export (inference.json): OpenVINO has no reader for it
    assert (ser_dir / "inference.json").is_file()
    runtime = resolve_runtime(InferenceOptions(backend="openvino"), "rec", ser_dir, AMD)
    assert runtime.backend == "paddle" and len(runtime.notes) == 1 and "PIR program" in runtime.notes[0]
    assert resolve_runtime(InferenceOptions(), "rec", ser_dir, AMD).label() == "paddle/cpu/fp32"


def test_openvino_matches_paddle_and_keeps_integrity_checks(ocr_model_dirs, tmp_path):
    det_dir, rec_dir, _ = ocr_model_dirs
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    ov_det = create_predictor(det_dir, InferenceOptions(concurrency=2), "det", caps=AMD)
    assert isinstance(ov_det, OpenVinoPredictor) and ov_det.runtime.label() == "openvino/cpu/fp32"
    pd_det = PaddlePredictor(det_dir, InferenceOptions())
    assert ov_det.version == pd_det.version and ov_det.input_names == ["x"]
    want = pd_det.run([x])[0]
    assert np.abs(ov_det.run({"x": x})[0] - want).max() < 1e-3
    got: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, ov_det.run([x])[0])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(np.array_equal(g, got[0]) for g in got.values())

    crops = np.random.default_rng(1).uniform(-1, 1, (3, 3, 48, 320)).astype(np.float32)
    ov_rec = OpenVinoPredictor(rec_dir, InferenceOptions(), extra_files=("ppocr_keys_v1.txt",))
    pd_rec = PaddlePredictor(rec_dir, InferenceOptions(), extra_files=("ppocr_keys_v1.txt",))
    a, b = ov_rec.run([crops])[-1], pd_rec.run([crops])[-1]
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-3 and np.array_equal(a.argmax(-1), b.argmax(-1))

    copy = tmp_path / "det"
    shutil.copytree(det_dir, copy)
    (copy / "inference.pdiparams").write_bytes(b"tampered")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        OpenVinoPredictor(copy)
    (copy / "SHA256SUMS").unlink()
    with pytest.raises(ModelIntegrityError, match="no SHA256SUMS"):
        create_predictor(copy, InferenceOptions(), "det", caps=AMD)


def test_openvino_threads_follow_the_paddle_settings():
    props = openvino_config(InferenceOptions(cpu_threads=2, concurrency=3), Runtime("openvino", precision="bf16"))
    assert props["INFERENCE_NUM_THREADS"] == 6 and props["NUM_STREAMS"] == 3
    assert props["INFERENCE_PRECISION_HINT"] == "bf16" and props["ENABLE_CPU_PINNING"] is False


def test_ocr_on_openvino_reads_a_real_page_as_paddle_does(xfund_zh_train, ocr_model_dirs):
    from PIL import Image

    from models.ocr import OcrConfig, OcrPredictor

    page = np.array(Image.open(xfund_zh_train / "image" / "zh_train_1.jpg").convert("RGB"))
    results = {}
    for backend in ("openvino", "paddle"):
        predictor = OcrPredictor(OcrConfig(inference=InferenceOptions(backend=backend)))
        assert predictor.runtime == f"det={backend}/cpu/fp32;rec={backend}/cpu/fp32"
        [results[backend]] = predictor([page])
    ov, pd = results["openvino"], results["paddle"]
    assert len(ov.lines) >= 20
    assert [ln.text for ln in ov.lines] == [ln.text for ln in pd.lines]
    assert [ln.box for ln in ov.lines] == [ln.box for ln in pd.lines]


def test_bf16_request_builds_and_runs_on_paddle(tiny_kie_dirs):
    ser_dir = tiny_kie_dirs[0]
    forced = create_predictor(ser_dir, InferenceOptions(), "ser", extra_files=(), caps=AMX)
    assert isinstance(forced, PaddlePredictor) and forced.runtime.label() == "paddle/cpu/bf16"
    plain = create_predictor(ser_dir, InferenceOptions(), "ser", caps=AMD)
    assert plain.runtime.label() == "paddle/cpu/fp32"
    ids = np.full((1, 64), 5, np.int64)
    batch = {"input_ids": ids, "bbox": np.zeros((1, 64, 4), np.int64), "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    a, b = forced.run(batch)[0], plain.run(batch)[0]
    assert a.shape == b.shape and np.isfinite(a).all()
    if not detect_capabilities().bf16:  # Paddle keeps fp32 here ("CPU does not support BFLOAT16 calculations")
        assert np.allclose(a, b, atol=1e-4)


def test_tensorrt_shape_ranges(tiny_kie_dirs):
    x = det_trt_shapes(DbParams())["x"]
    assert x == ([1, 3, 32, 32], [1, 3, 960, 640], [1, 3, 960, 960])
    assert det_trt_shapes(DbParams(limit_type="min", limit_side_len=736))["x"][2] == [1, 3, 2944, 2944]
    r = rec_trt_shapes((3, 48, 320), 6, 160)["x"]
    assert r == ([1, 3, 48, 320], [6, 3, 48, 640], [6, 3, 48, 2560])
    shapes = kie_trt_shapes(tiny_kie_dirs[0])
    assert tuple(shapes) == MODEL_INPUTS
    assert shapes["input_ids"] == ([1, 64], [4, 256], [8, 512]) and shapes["bbox"][2] == [8, 512, 4]
    re_shapes = kie_trt_shapes(tiny_kie_dirs[1])
    assert re_shapes["entities"][2] == [8, 512, 3] and re_shapes["pairs"][2] == [8, 4096, 2]


def test_tensorrt_config_is_refused_by_a_cpu_build_and_the_predictor_falls_back(ocr_model_dirs, tmp_path, caplog):
    import paddle

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("a CUDA build of Paddle: bench/bench_gpu.py runs the TensorRT variants")
    det_dir = ocr_model_dirs[0]
    trt = Runtime("paddle", "gpu", "fp16", tensorrt=True)
    options = InferenceOptions(device="gpu", trt_cache_dir=str(tmp_path / "trt"))
    with pytest.raises(RuntimeError, match="TENSORRT"):
        paddle_config(det_dir / "inference.pdmodel", det_dir / "inference.pdiparams", options, trt)
    with caplog.at_level(logging.WARNING):
        predictor = PaddlePredictor(det_dir, options, role="det", trt_shapes=det_trt_shapes(DbParams()),
                                    runtime=trt)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "TensorRT could not be used" in lines[0] and "running fp32 on GPU" in lines[0]
    assert predictor.runtime.label() == "paddle/gpu/fp32"
    # the shape ranges were collected into the worker-local cache folder, as a GPU run would
    assert list((tmp_path / "trt").glob("ch_PP-OCRv4_det_infer@*-fp16/shape_range_info.pbtxt"))
    out = predictor.run([np.zeros((1, 3, 64, 64), np.float32)])[0]
    assert out.shape == (1, 1, 64, 64)


def test_gpu_request_on_this_machine_says_why_in_one_line():
    caps = detect_capabilities()
    if caps.cuda_devices:
        pytest.skip("this machine has a GPU")
    runtime = resolve_runtime(InferenceOptions(device="gpu"), "ser")
    assert runtime.device == "cpu" and len(runtime.notes) == 1 and "no usable GPU" in runtime.notes[0]


def test_unknown_requests_are_refused():
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        InferenceOptions(precision="int4")
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        InferenceOptions(backend="onnx")
    with pytest.raises(ValueError, match="unknown model role"):
        resolve_runtime(InferenceOptions(), "cls", caps=AMD)


def test_a_pir_export_asked_for_tensorrt_falls_back_in_one_line(tiny_kie_dirs, tmp_path, caplog):
    import paddle

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("a CUDA build of Paddle: bench/bench_gpu.py runs the TensorRT variants")
    trt = Runtime("paddle", "gpu", "fp16", tensorrt=True)
    with caplog.at_level(logging.WARNING):  # PIR programs convert through paddle.tensorrt, absent from CPU builds
        predictor = PaddlePredictor(tiny_kie_dirs[0], InferenceOptions(device="gpu", trt_cache_dir=str(tmp_path)),
                                    role="ser", runtime=trt)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "TensorRT could not be used" in lines[0]
    assert predictor.runtime.label() == "paddle/gpu/fp32" and predictor.input_names == list(MODEL_INPUTS)
