# syntax=docker/dockerfile:1
#
# soustitre container: a release build on Debian 12 (GStreamer 1.22), run as a non-root user.
#
#   docker build -t soustitre .
#   docker run --rm -v soustitre-models:/var/lib/soustitre/models \
#     -v /path/to/shared/models:/mirror:ro -e SOUSTITRE_MODEL_MIRROR=/mirror \
#     -v "$PWD:/data" soustitre transcribe /data/meeting.wav --lang en --vtt /data/meeting.vtt
#
# Kept in lockstep with scripts/setup.sh, which is the single source for both the Debian package
# lists (`setup.sh --list build|runtime`) and the sha256-pinned ONNX Runtime library
# (`setup.sh --ort`). `make image-check` (scripts/image_check.py) carries out the runtime stage's
# instructions, read from this file, in a Debian 12 minbase tree without a container engine and
# runs the image through its entry point as its user: models fetched into the volume, a file
# transcribed, the GStreamer elements present. The build stage is `make build` on Debian 12.

ARG RUST_VERSION=1.95

# ---- build ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# GStreamer -dev packages + pip (for the ONNX Runtime wheel), then the library itself. Both
# depend only on setup.sh, so this layer stays cached while the sources change.
COPY scripts/setup.sh scripts/setup.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(bash scripts/setup.sh --list build) python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN bash scripts/setup.sh --ort

COPY . .
# The cargo registry and target/ live in BuildKit caches; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/soustitre /usr/local/bin/soustitre

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

COPY scripts/setup.sh /tmp/setup.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(bash /tmp/setup.sh --list runtime) \
 && rm -rf /var/lib/apt/lists/* /tmp/setup.sh

# .local/lib holds libonnxruntime.so.<version> and the relative libonnxruntime.so symlink.
COPY --from=build /src/.local/lib/ /usr/local/lib/soustitre/
COPY --from=build /usr/local/bin/soustitre /usr/local/bin/soustitre
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/soustitre \
      --shell /usr/sbin/nologin soustitre \
 && mkdir -p /var/lib/soustitre/models \
 && chown -R soustitre:soustitre /var/lib/soustitre

ENV SOUSTITRE_MODEL_DIR=/var/lib/soustitre/models \
    ORT_DYLIB_PATH=/usr/local/lib/soustitre/libonnxruntime.so
# Models are fetched at start by the entry point (SOUSTITRE_MODEL_MIRROR, SOUSTITRE_MODEL_BUNDLES).
VOLUME ["/var/lib/soustitre/models"]

USER soustitre
WORKDIR /var/lib/soustitre
# 8080: public (captions WebSocket/HTTP); 9090: admin and metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["--help"]
