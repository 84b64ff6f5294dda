# Example image for `dagger call build` / `publish`: fleetgate itself, stamped with the commit it was
# built from (a service's image would expose the same SHA on /buildinfo). Build arg GIT_SHA is set by
# the Dagger `build` function.
FROM docker.io/library/python:3.11.7-slim-bookworm

ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.revision=${GIT_SHA} \
      org.opencontainers.image.source="fleetgate"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipelines ./pipelines
COPY ci ./ci
RUN pip install --no-cache-dir . && useradd --system --uid 10001 fleetgate
USER fleetgate
ENTRYPOINT ["fleetgate"]
CMD ["--help"]
