#!/bin/sh
# `make image`: build the Dockerfile with buildah on a Debian bookworm base that
# debootstrap makes from the Debian mirror apt uses (no container registry needed).
#
#   - the base image $BASE (default localhost/kvip-bgp-base:bookworm) is made once:
#     debootstrap --variant=minbase with python3 and python3-venv, imported as one layer;
#   - then `buildah bud --build-arg BASE=$BASE -t $IMAGE` (default kvip-bgp:0.1.0);
#   - then the image is inspected (entrypoint, size) and, where containers can run here,
#     started once: `kvip-bgp --help` inside it.
#
# RUN steps use chroot isolation and the host's network: they need no OCI runtime, so
# the image builds even where containers cannot start. Running one here needs runc (crun
# refuses cgroup v1/v2 hybrid hosts), --cgroup-manager cgroupfs, and rlimits within the
# hard limits (podman's default nofile cannot be set without CAP_SYS_RESOURCE), as
# below and in tests/test_image.py.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
image=${IMAGE:-kvip-bgp:0.1.0}
base=${BASE:-localhost/kvip-bgp-base:bookworm}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
work=${WORKDIR:-$src/build/image}
mkdir -p "$work"  # run.log below, also when the base image exists already

say() { printf 'make image: %s\n' "$*"; }

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    say "base $base: debootstrap bookworm from $mirror"
    rm -rf "$work/rootfs"
    mkdir -p "$work"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -20 "$work/debootstrap.log" >&2
        exit 1
    }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    container=$(buildah from scratch)
    mount=$(buildah mount "$container")
    tar -C "$work/rootfs" -cf - . | tar -C "$mount" -xf -
    buildah umount "$container" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/sh "$container"
    buildah commit --rm "$container" "$base" >/dev/null
    rm -rf "$work/rootfs"
fi

# pip inside the build trusts what pip here trusts (PIP_CERT or pip's cert setting):
# the bundle is mounted for the build's RUN steps only, never copied into a layer.
cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null | grep '^/' || true)}
set -- --build-arg "BASE=$base"
if [ -n "$cert" ] && [ -r "$cert" ]; then
    set -- "$@" -v "$cert:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt
fi
say "buildah bud -t $image (BASE=$base)"
buildah bud --isolation chroot --network host --layers "$@" \
    -t "$image" -f "$src/Dockerfile" "$src"

say "inspect $image"
buildah inspect --type image --format \
    'entrypoint={{.OCIv1.Config.Entrypoint}} cmd={{.OCIv1.Config.Cmd}} user={{.OCIv1.Config.User}}{{println}}' "$image"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"

if command -v podman >/dev/null 2>&1; then
    if podman --runtime runc --cgroup-manager cgroupfs run --rm \
        --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --network host \
        "$image" --help >/dev/null 2>"$work/run.log"; then
        say "podman run $image --help: ok"
    else
        say "podman run $image --help failed (containers may not run here):"
        cat "$work/run.log" >&2
    fi
fi
