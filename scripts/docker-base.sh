#!/usr/bin/env bash
# Makes the local Debian 12 base image (default name gpt2d/debian:bookworm) when it is missing.
# No image registry is reachable here, so the base is built from Debian's package registry with
# debootstrap (minbase) and imported; the image's apt sources are this machine's, so packages
# installed inside it come from the same archive as the host's.
#
#   scripts/docker-base.sh [NAME]      prints the image name; builds it only when absent
set -euo pipefail
NAME=${1:-gpt2d/debian:bookworm}
DOCKER=${DOCKER:-docker}
if $DOCKER image inspect "$NAME" >/dev/null 2>&1; then
  echo "$NAME"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "docker-base: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
# The archive this machine installs from: the first deb URI of its apt sources.
mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1)
[[ -n $mirror ]] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1)
[[ -n $mirror ]] || { echo "docker-base: no Debian archive found in /etc/apt sources" >&2; exit 1; }
root=$(mktemp -d /tmp/gpt2d-rootfs.XXXX)
trap 'rm -rf "$root"' EXIT
echo "docker-base: debootstrap bookworm from $mirror (about a minute)" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Same archive, suites and security updates as the host (its deb822 file replaces debootstrap's list).
if [[ -s /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  rm -f "$root/etc/apt/sources.list"
fi
# The certificate authorities this machine adds to the system's (a TLS-inspecting proxy, say):
# trusted in the image once its ca-certificates package is installed, as on the host.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | $DOCKER import -c 'CMD ["/bin/bash"]' - "$NAME" >/dev/null
echo "$NAME"
