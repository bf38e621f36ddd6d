# log-hindsight worker/sink image (used by docker-compose.yml).

# The window engine compiled with mypyc and the C fast paths (scripts/build_native.py) in the full image, which has a C
# compiler; the slim image below only receives the extension modules and their source hashes.
FROM python:3.11 AS native
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY scripts/build_native.py ./scripts/
# the project's dependencies too: mypyc type-checks the engine against them, as `make native` does
RUN pip install --no-cache-dir -e . "mypy>=1.11" setuptools && python scripts/build_native.py \
    && test -f pipeline/engine/native.sha256 && ls pipeline/ingest/_route.*.so pipeline/wire/_frames.*.so

FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY connectors ./connectors
COPY schemas ./schemas
COPY deploy ./deploy
COPY --from=native /app/pipeline/engine/*.so /app/pipeline/engine/native.sha256 ./pipeline/engine/
# the C fast paths (pipeline/compiled.py): used while they match the .c sources copied above
COPY --from=native /app/pipeline/ingest/*.so ./pipeline/ingest/
COPY --from=native /app/pipeline/wire/*.so ./pipeline/wire/
# editable: schemas/ and deploy/clickhouse/ are read from the source tree
RUN pip install -e ".[all]" && useradd --create-home hindsight && mkdir -p /data && chown hindsight /data
USER hindsight
ENV HINDSIGHT_HOME=/data
ENTRYPOINT ["hindsight"]
CMD ["--help"]
