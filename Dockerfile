# SmartLinks Autopilot server image.
#
#   docker build -t smartlinks-autopilot .
#
# The image holds the server (installed with pip, run by gunicorn through `smartlinks serve`), the
# Rego policies (/app/rego) and the OPA binary, so `smartlinks policy build` works in it and, when
# OPA_URL is not set, `smartlinks serve` can run OPA as a supervised sidecar inside the container.
# docker-compose.yml runs OPA as its own services instead (OPA_URL=http://opa:8181), fed with
# signed bundles by this server.
#
# It starts in production mode: it refuses to start without SECRET_KEY (or SECRET_KEY_FILE) of at
# least 32 characters, and session cookies are Secure (serve it behind HTTPS).
#
# Build context: only the paths copied below end up in the image, but Docker still uploads the
# whole directory; a .dockerignore listing .venv/, .tools/, var/, .git/ and tests/ keeps that small.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# DejaVu Sans for PDF documents whose names are not in Latin-1 (billing/document_render.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user with a fixed uid/gid (docker-compose.yml runs OPA with the same ids so that
# it can read the bundle this user builds; bundle files are written with mode 600).
RUN groupadd --system --gid 10001 smartlinks \
    && useradd --system --uid 10001 --gid smartlinks --home-dir /var/lib/smartlinks --no-create-home \
       --shell /usr/sbin/nologin smartlinks \
    && install -d -o smartlinks -g smartlinks -m 0750 /var/lib/smartlinks /var/lib/smartlinks/bundles

# The OPA binary from the official static image (the same version the project pins in opa/install.sh).
COPY --from=openpolicyagent/opa:1.22.3-static /opa /usr/local/bin/opa

# The Python packages (pyproject.toml: server*, algorithms*, billing*). The source is removed after
# `pip install .`: the server runs from site-packages, and `python -m gunicorn` started in /app
# cannot pick up a second copy.
WORKDIR /usr/src/smartlinks
COPY pyproject.toml README.md ./
COPY server ./server
COPY algorithms ./algorithms
COPY billing ./billing
RUN pip install . \
    && cd / && rm -rf /usr/src/smartlinks

# Policies and the OPA tooling; the installed package does not carry them.
WORKDIR /app
COPY rego ./rego
COPY opa ./opa

# Paths are set explicitly: the defaults in server/config.py are relative to the source checkout,
# which an installed package (site-packages) is not.
ENV SMARTLINKS_ENV=production \
    OPA_BIN=/usr/local/bin/opa \
    REGO_DIR=/app/rego \
    SMARTLINKS_VAR_DIR=/var/lib/smartlinks \
    HOST=0.0.0.0 \
    PORT=8000

USER smartlinks:smartlinks
EXPOSE 8000

# Liveness only (/healthz needs neither the database nor OPA); readiness is /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

# Migrate, create the first admin if there is none (BOOTSTRAP_ADMIN_PASSWORD[_FILE], or a
# generated password printed once and written to $SMARTLINKS_VAR_DIR/admin-password.txt), serve.
CMD ["sh", "-c", "smartlinks db upgrade && smartlinks bootstrap && exec smartlinks serve"]
