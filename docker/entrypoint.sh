#!/bin/sh
# Entry point of the bevctl image (under tini). The container may run as any uid:gid (bevctl passes the host
# user's, so files in the bind-mounted runs/ belong to them); such a uid has no home directory in the image, and
# pip, torch hub and matplotlib all want a writable one.
set -e
if [ -z "${HOME:-}" ] || [ "${HOME}" = "/" ] || ! mkdir -p "${HOME}" 2>/dev/null || [ ! -w "${HOME}" ]; then
    HOME="/tmp/home-$(id -u)"
    export HOME
    mkdir -p "${HOME}"
fi
exec "$@"
