# syntax=docker/dockerfile:1
# One image for every component of fake-gpu-operator (`fake-gpu-operator <component>`), plus the
# fake NVML library and our nvidia-smi, which the device/DRA plugins copy onto nodes for GPU
# containers (and which mock/in-pod use can take from here).
#
#   docker build -t ghcr.io/fake-gpu-operator/fake-gpu-operator:0.1.0 .
#
# Build stage: the workspace in release mode (rust:1-bookworm: current stable, the same glibc as the runtime).
# What the plugins inject into GPU containers (the fake NVML, nvidia-smi) is built by
# scripts/build-portable.sh against glibc 2.17, so that it runs in old and slim images too.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/root/.cache/fake-gpu-operator \
    apt-get update && apt-get install -y --no-install-recommends python3-venv binutils \
 && cargo build --release --locked -p fake-gpu-operator \
 && PORTABLE_OUT=/src/target/portable/release scripts/build-portable.sh \
 && mkdir -p /out/bin /out/lib \
 && cp target/release/fake-gpu-operator /out/bin/ \
 && cp target/portable/release/bin/nvidia-smi /out/bin/ \
 && cp target/portable/release/lib/libnvidia-ml.so.1 /out/lib/libnvidia-ml.so.1 \
 && cp target/portable/release/lib/libcuda.so.1 /out/lib/libcuda.so.1 \
 && strip /out/bin/* /out/lib/libnvidia-ml.so.1 /out/lib/libcuda.so.1

# Runtime: Debian slim (glibc for the NVML cdylib, /bin/sh for the plugins' host-file init
# container), CA certificates for the API server, a non-root user by default. Components that
# must be root (device/DRA kubelet plugins) get it from their pod securityContext.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/bin/fake-gpu-operator /usr/local/bin/fake-gpu-operator
COPY --from=build /out/bin/nvidia-smi /usr/local/bin/nvidia-smi
COPY --from=build /out/lib/libnvidia-ml.so.1 /usr/local/lib/fake-gpu-operator/libnvidia-ml.so.1
COPY --from=build /out/lib/libcuda.so.1 /usr/local/lib/fake-gpu-operator/libcuda.so.1
RUN ln -s libnvidia-ml.so.1 /usr/local/lib/fake-gpu-operator/libnvidia-ml.so \
 && ln -s libcuda.so.1 /usr/local/lib/fake-gpu-operator/libcuda.so \
 && echo /usr/local/lib/fake-gpu-operator > /etc/ld.so.conf.d/fake-gpu-operator.conf \
 && ldconfig
USER 65532:65532
EXPOSE 9400 8080
ENTRYPOINT ["/usr/local/bin/fake-gpu-operator"]
CMD ["version"]
