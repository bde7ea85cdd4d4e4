# The worker image: embedq[worker] (onnxruntime + tokenizers), no torch (EXTRAS=gateway: the gateway's). The model directory is
# mounted at run time (prepare it once with `embedq model prepare`, or the compose `model` service).
FROM python:3.11-slim
ARG EXTRAS=worker
# For EXTRAS=worker,export: an index serving CPU builds of torch 2.13.0, to avoid the multi-GB CUDA build.
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} PYTHONUNBUFFERED=1
WORKDIR /app
# The repository root is the package `embedq` (pyproject.toml maps it): its __init__.py and py.typed too.
COPY pyproject.toml README.md __init__.py cli.py errors.py py.typed ./
COPY broker broker
COPY config config
COPY gateway gateway
COPY local local
COPY producer producer
COPY worker worker
RUN pip install --no-cache-dir ".[${EXTRAS}]"
# The Batch API's files (the gateway's EMBEDQ_FILES_DIR): a volume mounted here starts owned by nobody.
RUN mkdir -p /data/files && chown nobody /data/files
USER nobody
ENTRYPOINT ["embedq"]
CMD ["supervise"]
