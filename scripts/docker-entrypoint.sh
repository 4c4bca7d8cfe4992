#!/bin/sh
# Container entry point: fetch and verify the models, then exec the command.
#
# - `docker run IMAGE transcribe x.wav ...` runs `soustitre transcribe x.wav ...`;
#   a first argument that is a program on PATH (sh, gst-inspect-1.0...) is run as is.
# - Before a soustitre command, `soustitre models fetch` copies the bundles named in
#   SOUSTITRE_MODEL_BUNDLES (default: all) from SOUSTITRE_MODEL_MIRROR into
#   SOUSTITRE_MODEL_DIR (a volume), checking every sha256; files already there and intact are kept.
#   With no mirror set, nothing is fetched and soustitre uses what the volume holds.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
    set -- soustitre "$@"
fi

if [ "$1" = soustitre ]; then
    case "${2:-}" in
        models | help | -h | --help | -V | --version | "") ;; # nothing to fetch for these
        *)
            if [ -n "${SOUSTITRE_MODEL_MIRROR:-}" ]; then
                # shellcheck disable=SC2086 # a space-separated list of bundle names
                soustitre models fetch ${SOUSTITRE_MODEL_BUNDLES:---all}
            else
                echo "docker-entrypoint: SOUSTITRE_MODEL_MIRROR is not set: using the models already in ${SOUSTITRE_MODEL_DIR:-the model dir}" >&2
            fi
            ;;
    esac
fi

exec "$@"
