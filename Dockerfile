# Cairn operator image: the torch-free base package only (no `agent` extra), which provides the
# `cairn` console script for `cairn operator` and for the GC Jobs the operator starts
# (`cairn gc`). Training images install `cairn[agent]` themselves.
#
#   docker build -t cairn:dev .
#   docker run --rm cairn:dev --help

# --- build: install the package and its runtime dependencies into a virtual environment -----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/cairn
COPY pyproject.toml ./
COPY agent/ agent/
COPY operator/ operator/
# `.` without extras: no torch, no megatron-core. The check fails the build if one slipped in.
RUN /opt/cairn/bin/pip install . \
 && /opt/cairn/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && /opt/cairn/bin/python -c "import cairn_agent.cli.main, cairn_operator.run"

# --- runtime: the virtual environment on a clean base, as an unprivileged user ----------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="cairn" \
      org.opencontainers.image.description="Cairn operator: Kubernetes-native checkpointing for distributed training" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cairn \
 && useradd --system --uid 10001 --gid cairn --no-create-home --shell /usr/sbin/nologin cairn
COPY --from=build /opt/cairn /opt/cairn
ENV PATH=/opt/cairn/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["cairn"]
CMD ["operator"]
