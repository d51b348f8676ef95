#!/usr/bin/env bash
# The image's HEALTHCHECK: GET http://127.0.0.1:PORT/healthz answers 200 (gpt2d: 9400, a worker:
# 9401). Bash's /dev/tcp, so it needs nothing the base image may lack (curl, wget).
#   gpt2-healthcheck [PORT]      PORT defaults to $GPT2_HEALTH_PORT, else 9400
set -uo pipefail
port=${1:-${GPT2_HEALTH_PORT:-9400}}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || exit 1
[[ $status == *" 200 "* ]]
