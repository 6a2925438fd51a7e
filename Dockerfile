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

# Every service runs as this user, never as root: the code is root's and read-only to it; only
# SHOPSTREAM_HOME (state, logs, checkpoints) and dbt's target folder are its own. The checkpoints
# folder exists here so compose's named volume mounted on it starts out owned by this user.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/shopstream --no-create-home shopstream \
 && mkdir -p /app/dbt_project/target /app/dbt_project/logs /var/lib/shopstream/checkpoints \
 && chown -R shopstream:shopstream /var/lib/shopstream /app/dbt_project/target /app/dbt_project/logs \
 && chmod 700 /var/lib/shopstream
USER shopstream

ENV SHOPSTREAM_HOME=/var/lib/shopstream \
    SHOPSTREAM_BIND_ADDRESS=0.0.0.0
# Puts each password compose gives into its URL, URL-encoded, then runs the command.
ENTRYPOINT ["python", "-m", "shopstream.container"]
