# The funnel image: the collector, the stream workers, the sink and the CLI in one Python image
# (docker-compose.yml runs it with different commands). The entrypoint is the `funnel` CLI.
#   docker build -t funnel:0.1.0 .
# Debian 12 (bookworm), the distribution the project is tested on; Python 3.11 as in CI.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every dependency ships wheels (manylinux or pure Python): no compiler in the image.
# Metadata first, so a code-only change reuses nothing it should not; then the packages the
# wheel contains (pyproject.toml: tool.hatch.build.targets.wheel).
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY funnel ./funnel
COPY producers ./producers
COPY stream_processors ./stream_processors
COPY storage ./storage
COPY dashboards ./dashboards
COPY devtools ./devtools
RUN pip install /src && rm -rf /src

# An unprivileged user whose home is the working directory: the worker's data dir and the
# default embedded store (./.funnel) are writable there.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/funnel funnel
USER funnel
WORKDIR /var/lib/funnel

# collector HTTP, worker web (/metrics), sink /metrics
EXPOSE 8000 6066 9108
ENTRYPOINT ["funnel"]
CMD ["--help"]
