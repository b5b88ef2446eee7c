# The fcl service image used by docker-compose.yml (migrate, streams, trainer, web).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# the service packages sit at the top of the repository; fcl/<name> links to each (they install as fcl.<name>)
COPY contract ./contract
COPY storage ./storage
COPY trainers ./trainers
COPY messaging ./messaging
COPY streams ./streams
COPY worker ./worker
COPY web ./web
COPY serving ./serving
COPY fcl ./fcl
RUN pip install --no-cache-dir '.[all]'
ENV FCL_ARTIFACT_URL=/var/lib/fcl/artifacts
RUN mkdir -p /var/lib/fcl/artifacts && chown nobody /var/lib/fcl/artifacts
USER nobody
CMD ["fcl", "--help"]
