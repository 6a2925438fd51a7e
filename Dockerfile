# One image for every ShopStream Python service (producer, Spark stream, Dagster, dashboard).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY shopstream ./shopstream
COPY streaming ./streaming
COPY dashboard ./dashboard
COPY shopstream_assets ./shopstream_assets
COPY shopstream_cli ./shopstream_cli
COPY dbt_project ./dbt_project
COPY workspace.yaml ./
RUN pip install --no-cache-dir -c constraints.txt -e . \
 && SHOPSTREAM_HOME=/var/lib/shopstream shopstream jars

ENV SHOPSTREAM_HOME=/var/lib/shopstream \
    SHOPSTREAM_BIND_ADDRESS=0.0.0.0
