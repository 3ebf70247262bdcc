# The funnel image: collector, workers, sink and CLI in one Python image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY funnel ./funnel
COPY producers ./producers
COPY stream_processors ./stream_processors
COPY storage ./storage
COPY dashboards ./dashboards
RUN pip install .

RUN useradd --system --create-home funnel
USER funnel
ENTRYPOINT ["funnel"]
CMD ["--help"]
