# syntax=docker/dockerfile:1
# The VisionCraftAI service image: `docker build -t visioncraft .`
# Two stages: the first installs the dependencies that pyproject.toml lists into a virtualenv,
# the second copies that virtualenv into a clean slim image that runs as a non-root user.
ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv

# The dependencies come from pyproject.toml alone, so a change to the code reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --requirement requirements.txt

COPY README.md ./
COPY app ./app
COPY telemetry ./telemetry
RUN pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    VISIONCRAFT_HOST=0.0.0.0 \
    VISIONCRAFT_PORT=8000 \
    VISIONCRAFT_DATA_DIR=/data \
    VISIONCRAFT_LOG_FORMAT=json \
    OTEL_SEMCONV_STABILITY_OPT_IN=http
RUN groupadd --system --gid 10001 visioncraft \
    && useradd --system --uid 10001 --gid visioncraft --home-dir /data --no-create-home visioncraft \
    && mkdir /data \
    && chown visioncraft:visioncraft /data
COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /data
EXPOSE 8000
# The slim image has no curl, so Python's standard library makes the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VISIONCRAFT_PORT', '8000') + '/api/v1/monitoring/liveness', timeout=2)"]
ENTRYPOINT ["visioncraft"]
CMD ["serve", "--host", "0.0.0.0"]
