# kvip-bgp image: Debian bookworm + the package, installed the way `make install` does it
# (`pip install .` into a virtualenv at /opt/kvip-bgp/venv).
#
#   make image                        # buildah, on a base made by debootstrap (no registry)
#   docker build -t kvip-bgp:0.1.0 .  # on python:3.11-slim-bookworm from Docker Hub
#
# BASE must have python3 with venv (Debian: python3-venv) and /bin/sh.
#
# The chart (charts/kvip-bgp) runs it as root with CAP_NET_ADMIN only and a read-only root
# filesystem; its init container uses /bin/sh and sed from the base image.

ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
# Optional: a CA bundle for pip, mounted into the build only (make image passes the build
# machine's when its egress to PyPI needs it); it does not end up in the image.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /src
RUN python3 -m venv /opt/kvip-bgp/venv \
 && /opt/kvip-bgp/venv/bin/pip install /src \
 && /opt/kvip-bgp/venv/bin/kvip-bgp --help >/dev/null

FROM ${BASE}
# Same base image as the build stage, so the venv's python symlink stays valid.
COPY --from=build /opt/kvip-bgp/venv /opt/kvip-bgp/venv
ENV PATH=/opt/kvip-bgp/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# /run/kvip-bgp: ExaBGP's generated config and API socket (an emptyDir in the chart).
RUN mkdir -p -m 0700 /run/kvip-bgp && mkdir -p /etc/kvip-bgp
# Root: binding VIPs over netlink needs CAP_NET_ADMIN, which container runtimes grant to
# UID 0 only. The chart drops every other capability.
USER 0
ENTRYPOINT ["kvip-bgp"]
CMD ["run", "--config", "/etc/kvip-bgp/config.yaml"]
