#!/usr/bin/env bash
# Optional test-only installs that need more than pip: each part is added by the issue that needs it and must
# print what it did. Failing to set up an optional part makes the dependent tests skip with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
echo "setup_extras: nothing extra to install yet"
