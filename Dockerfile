# One image for the API, the worker and migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml ./
COPY ecomdream ./ecomdream
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY migrations ./migrations
COPY worker.py ./
RUN pip install . && useradd --create-home --uid 10001 ecomdream

USER ecomdream
EXPOSE 8000
CMD ["python", "-m", "api"]
