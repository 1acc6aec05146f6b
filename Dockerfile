# costroute: the proxy as a container.
#   docker build -t costroute .
#   docker run -p 8080:8080 -v costroute-data:/data \
#     -e COSTROUTE_CLIENT_KEY -e COSTROUTE_ADMIN_KEY \
#     -e OPENAI_API_KEY costroute
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY adapters ./adapters
COPY config ./config
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin costroute \
 && mkdir -p /data /etc/costroute \
 && cp config/costroute.container.toml /etc/costroute/config.toml \
 && chown -R costroute:costroute /data

# The SQLite queue and routing log live here: keep it on a volume so accepted tickets
# survive restarts and upgrades.
VOLUME ["/data"]
USER costroute
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

CMD ["costroute", "serve", "--config", "/etc/costroute/config.toml", "--host", "0.0.0.0", "--port", "8080"]
