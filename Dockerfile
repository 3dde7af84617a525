# kvip-bgp image: Debian slim + the package, installed the way `make install` does it
# (`pip install .` into a virtualenv at /opt/kvip-bgp/venv).
#
#   docker build -t kvip-bgp:0.1.0 .
#
# The chart (charts/kvip-bgp) runs it as root with CAP_NET_ADMIN only and a read-only root
# filesystem; its init container uses /bin/sh and sed from the base image.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /src
RUN python -m venv /opt/kvip-bgp/venv \
 && /opt/kvip-bgp/venv/bin/pip install /src \
 && /opt/kvip-bgp/venv/bin/kvip-bgp --help >/dev/null

FROM python:3.11-slim-bookworm
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
