# syntax=docker/dockerfile:1
#
# secret-injector on distroless, run as UID/GID 65532 (distroless "nonroot"): the user
# deploy/base/deployment.yaml runs it as, with a read-only root filesystem. The runtime image
# has no shell and no package manager; the binary writes nothing and needs no HOME.
# tests/image_runtime.rs runs the release binary under those conditions.
#
#   make image IMAGE=<registry>/secret-injector:<tag>
#   then set the same name and tag under `images:` in deploy/base/kustomization.yaml

# Builder: pinned toolchain (Cargo.toml's rust-version) on Debian 12, the glibc the runtime has.
FROM rust:1.94-bookworm AS build
WORKDIR /src
# .dockerignore keeps the context to Cargo.toml, Cargo.lock, src/, benches/ and tests/ (cargo
# needs the declared bench and test targets to exist even when building only the binary).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin secret-injector \
 && cp target/release/secret-injector /secret-injector

# Runtime: glibc and libgcc only (cc), no shell. TLS roots are compiled into the binary.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /secret-injector /usr/local/bin/secret-injector
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/secret-injector"]
CMD ["serve"]
