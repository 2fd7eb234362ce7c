# vitserve container: build on Debian 12, run on Debian 12 slim.
# The build stage runs the same commands as the README and .ci/run
# (scripts/install-deps.sh, cmake --preset release), so what CI builds is
# what the image builds.
#   docker build -t vitserve .
#   docker run -p 7860:7860 -v hf-cache:/data vitserve
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh
COPY . .
RUN cmake --preset release -DVS_CUDA=OFF && cmake --build --preset release \
 && strip build/release/src/vitserve

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libdnnl2 libgomp1 libmicrohttpd12 libjansson4 libssl3 zlib1g \
      libjpeg62-turbo libpng16-16 libwebp7 libwebpdemux2 libgif7 libcurl4 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# Hugging Face Spaces run containers as uid 1000.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin user \
 && mkdir -p /data && chown user:user /data
COPY --from=build /src/build/release/src/vitserve /usr/local/bin/vitserve
USER user
ENV HF_HOME=/data \
    HOST=0.0.0.0 \
    PORT=7860 \
    OMP_WAIT_POLICY=PASSIVE
VOLUME /data
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health/ready" || exit 1
# No --model here: a flag would override VITSERVE_MODEL (flags win over the
# environment).  Without either, serve loads google/vit-base-patch16-224;
# `docker run ... vitserve --model ORG/NAME` still appends the flag.
ENTRYPOINT ["vitserve", "serve"]
CMD []
