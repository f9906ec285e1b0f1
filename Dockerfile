# Dataflow GPU worker image for kiebeam (custom SDK container, Runner v2).
#
#   bash bin/bootstrap.sh                      # puts the bundled models under .models/ (copied in below)
#   docker build -t REGION-docker.pkg.dev/PROJECT/kiebeam/worker:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/kiebeam/worker:0.1.0
#
# The Beam SDK version and the Python minor version must match the launcher (apache-beam 2.77.0, Python 3.11).
# paddlepaddle-gpu 3.x is not on PyPI (PyPI stops at 2.6.2), so it comes from Paddle's own package index.
# Models are baked in (loading them from GCS at worker start-up is slow and retried, apache/beam#25286).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    KIEBEAM_MODEL_HOME=/opt/kiebeam/models \
    FLAGS_allocator_strategy=auto_growth

RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Paddle GPU (CUDA 12.6 build) from Paddle's index, then the project with its pinned dependencies.
RUN pip install --upgrade pip \
    && pip install paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/stable/cu126/
COPY setup.py README.md /opt/kiebeam/src/
COPY pipelines /opt/kiebeam/src/pipelines
COPY transforms /opt/kiebeam/src/transforms
COPY models /opt/kiebeam/src/models
COPY training /opt/kiebeam/src/training
COPY schemas /opt/kiebeam/src/schemas
RUN pip install /opt/kiebeam/src && python -c "import apache_beam, paddle, pipelines.extract"

# Models, each folder with its SHA256SUMS: the bundled default SER/RE first, then .models/ (PP-OCRv4 det/rec from
# bin/bootstrap.sh, and your own SER/RE in .models/kie/default/ if you put one there, which then wins).
COPY models/assets/default_kie /opt/kiebeam/models/kie/default
COPY .models /opt/kiebeam/models
# The bundled SER parameters ship packed (models/packed_params.py); unpack them once here, not on every worker.
RUN python -m models.packed_params unpack /opt/kiebeam/models/kie/default/ser/inference.pdiparams.packed

# Beam's worker boot loader, from the SDK image of the same Beam and Python versions.
COPY --from=apache/beam_python3.11_sdk:2.77.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
