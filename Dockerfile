# Production image: the proxy only. Redis and Postgres come from REDIS_URL / DATABASE_URL
# (docker-compose.yml runs redis:8 and postgres). Local MiniLM embeddings are opt-in:
#   docker build --build-arg WITH_SEMANTIC=1 .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
ARG WITH_SEMANTIC=0
RUN useradd --create-home --uid 10001 orcache
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY cache ./cache
COPY logstore ./logstore
COPY ui_static ./ui_static
COPY scripts ./scripts
RUN if [ "$WITH_SEMANTIC" = "1" ]; then \
        pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 && pip install -e ".[semantic]"; \
    else pip install -e .; fi
USER orcache
ENV ORCACHE_HOST=0.0.0.0 ORCACHE_PORT=8080 ORCACHE_DATA_DIR=/home/orcache/data ORCACHE_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["orcache", "serve"]
