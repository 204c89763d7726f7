#!/usr/bin/env bash
# Install the pinned real Claude Code CLI into a cache folder (once), for the real-client tests.
# usage: .ci/install-claude.sh            prefix: ${MPM_CLAUDE_PREFIX:-$HOME/.cache/mpm-ci/claude}
# The tests find it there (or through MPM_CLAUDE_BIN) and say SKIPPED when it is missing.
set -euo pipefail
VERSION=2.1.331
PREFIX=${MPM_CLAUDE_PREFIX:-$HOME/.cache/mpm-ci/claude}
BIN="$PREFIX/node_modules/.bin/claude"
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "^$VERSION "; then
    echo "claude $VERSION already installed in $PREFIX"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install-claude: npm not found; install Node.js/npm, or skip the real-client tests" >&2
    exit 1
fi
mkdir -p "$PREFIX"
# Pinned: an unpinned install may resolve an older version from cached metadata.
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION"
"$BIN" --version
