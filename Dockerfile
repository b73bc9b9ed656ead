# One image for every role: `mediamill api`, `worker`, `notifier`, `db upgrade`, `serve`.
# Every media binary comes from a wheel (ffmpeg: imageio-ffmpeg, libvips: pyvips-binary, pdfium:
# pypdfium2), so the image needs no distribution packages for media.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY src ./src
# the pinned dependency set first (a layer that survives code changes), then mediamill itself
RUN pip wheel --wheel-dir /wheels -r requirements.lock \
 && pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    MEDIAMILL_DATA_DIR=/var/lib/mediamill \
    MEDIAMILL_HOST=0.0.0.0 \
    MEDIAMILL_METRICS_HOST=0.0.0.0 \
    MEDIAMILL_LOG_FORMAT=json
RUN groupadd --system --gid 10001 mediamill \
 && useradd --system --uid 10001 --gid mediamill --home-dir /var/lib/mediamill --create-home mediamill
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels mediamill \
 && rm -rf /wheels \
 && mediamill doctor --json > /dev/null
USER 10001:10001
WORKDIR /var/lib/mediamill
# 8000: the API (and `serve`); 9100: the scrape and probe port of each process (--metrics-port)
EXPOSE 8000 9100
ENTRYPOINT ["mediamill"]
CMD ["serve"]
