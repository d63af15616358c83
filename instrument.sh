#!/bin/sh
# Add OpenTelemetry to a running Docker container: ./instrument.sh <container> [language] [options]
# A thin wrapper around `ophion instrument` (docs/instrumentation.md) for hosts where the ophion
# command is not on PATH yet.
set -eu

usage() {
    echo "usage: $0 <container> [python|nodejs|java|dotnet|go|php] [ophion instrument options]" >&2
    echo "       $0 --help   shows every option" >&2
}

if [ "$#" -eq 0 ]; then
    usage
    exit 2
fi

if command -v ophion >/dev/null 2>&1; then
    exec ophion instrument "$@"
fi
# Installed for this user but ~/.local/bin is not on PATH (pip install --user, pipx).
if [ -x "${HOME:-/nonexistent}/.local/bin/ophion" ]; then
    exec "$HOME/.local/bin/ophion" instrument "$@"
fi

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
echo "error: the ophion command is not installed" >&2
if [ -f "$here/pyproject.toml" ]; then
    echo "hint: install it from this checkout: python3 -m pip install -c \"$here/.ci/constraints.txt\" \"$here\" (or pipx install \"$here\")," >&2
else
    echo "hint: install it: python3 -m pip install ophion (or pipx install ophion)," >&2
fi
echo "      then start the daemon (ophiond, or ophion daemon install --now) and run this again" >&2
exit 127
