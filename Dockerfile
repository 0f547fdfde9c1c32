# mailmon serve in a container: docker build -t mailmon . (docker-compose.yml builds it).
FROM python:3.12-slim AS build
# A C compiler for the parsing modules setup.py compiles (monitor/native.py); without it
# the wheel holds the source alone, which works the same, more slowly.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py mypyc.ini README.md ./
COPY monitor ./monitor
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mailmon --shell /usr/sbin/nologin mailmon \
    && mkdir -p /var/lib/mailmon /etc/mailmon \
    && chown mailmon /var/lib/mailmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# `mailmon dashboards push` finds them here without --dir.
COPY dashboards/*.json /usr/share/mailmon/dashboards/
ENV MAILMON_DATA_DIR=/var/lib/mailmon \
    MAILMON_CONFIG=/etc/mailmon/mailmon.toml \
    PYTHONUNBUFFERED=1
USER mailmon
VOLUME ["/var/lib/mailmon"]
EXPOSE 8465
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8465/healthz', timeout=3)"]
ENTRYPOINT ["mailmon"]
CMD ["serve"]
