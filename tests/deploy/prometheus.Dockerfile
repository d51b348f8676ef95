# A Prometheus image for the tests (no registry reachable here): Debian's prometheus binary on our
# local Debian base, laid out as the prom/prometheus image the compose file names by default
# (ENTRYPOINT /bin/prometheus, storage in /prometheus, user nobody).
ARG BASE
FROM ${BASE}
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
