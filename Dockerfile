# log-hindsight worker/sink image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY connectors ./connectors
COPY schemas ./schemas
COPY deploy ./deploy
# editable: schemas/ and deploy/clickhouse/ are read from the source tree
RUN pip install -e . && useradd --create-home hindsight && mkdir -p /data && chown hindsight /data
USER hindsight
ENV HINDSIGHT_HOME=/data
ENTRYPOINT ["hindsight"]
CMD ["--help"]
