# dfs in a container: the single executable from `npm run build:bin` (see docs/packaging.md) on a
# plain Debian base, no Node at run time.
#   docker build -t dfs .
#   docker run --rm dfs --help

# --- build: the same npm steps the tests run (test/binary.test.ts) ---
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# npm ci's postinstall (patch-package) applies these to node_modules; without them the executable
# would bundle the unpatched dependencies.
COPY patches ./patches
RUN npm ci
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build:bin

# --- run: only the executable ---
FROM debian:bookworm-slim
# A fixed uid, so files in volumes keep one owner across images.
RUN groupadd --system --gid 10001 dfs \
 && useradd --system --uid 10001 --gid dfs --home-dir /data --no-create-home --shell /usr/sbin/nologin dfs \
 && mkdir -p /data /certs \
 && chown dfs:dfs /data /certs
COPY --from=build /src/dist/dfs /usr/local/bin/dfs
USER dfs
# A node's data; /certs is where compose.yaml keeps the cluster's certificates (--certs /certs).
VOLUME /data
WORKDIR /data
# directory, lock, storage
EXPOSE 9000 9001 9003
ENTRYPOINT ["dfs"]
CMD ["--help"]
