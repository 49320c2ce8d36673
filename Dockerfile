# The duanka worker image: `docker compose build worker`, or
# `docker build -t duanka .`. Runs `duanka worker` unless given another command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/duanka duanka \
 && mkdir -p /var/lib/duanka /etc/duanka \
 && chown duanka /var/lib/duanka \
 && cp config.yaml /etc/duanka/config.yaml

# docker-compose.yml mounts the deployment's config.yaml over this copy.
ENV DUANKA_CONFIG=/etc/duanka/config.yaml \
    DUANKA_DATA_DIR=/var/lib/duanka

USER duanka
WORKDIR /var/lib/duanka
EXPOSE 6066
ENTRYPOINT ["duanka"]
CMD ["worker"]
