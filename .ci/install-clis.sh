#!/usr/bin/env bash
# Install the pinned other agent CLIs (issue 15) into a cache folder, from npm and PyPI only.
# usage: .ci/install-clis.sh [NAME...]     NAME: codex gemini opencode aider (default: all)
# prefix: ${MPM_CLI_PREFIX:-$HOME/.cache/mpm-ci}; each CLI in its own folder:
#   codex/node_modules/.bin/codex         @openai/codex@0.171.0       (~424 MB, native binary)
#   gemini/node_modules/.bin/gemini       @google/gemini-cli@0.61.0   (~100 MB)
#   opencode/node_modules/.bin/opencode   opencode-ai@1.18.33         (native binary)
#   aider/bin/aider                       aider-chat==0.86.2          (Python venv, ~1 min)
# An installed CLI at the pinned version is kept. Tests that need a missing CLI say SKIPPED, except
# under CI (CI=true).
set -euo pipefail
PREFIX=${MPM_CLI_PREFIX:-$HOME/.cache/mpm-ci}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(codex gemini opencode aider)

npm_cli() { # name package version binary
    local dir="$PREFIX/$1" bin="$PREFIX/$1/node_modules/.bin/$4"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$3"; then
        echo "$1 $3 already installed in $dir"
        return
    fi
    command -v npm >/dev/null || { echo "install-clis: npm not found (needed for $1)" >&2; exit 1; }
    mkdir -p "$dir"
    # Pinned, without dependencies' install scripts (keytar, node-pty: not needed); the CLI's own
    # postinstall, where it has one (opencode links its native binary), is run by hand.
    npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --loglevel=error "$2@$3"
    local pkg="$dir/node_modules/$2"
    if [ -f "$pkg/postinstall.mjs" ]; then (cd "$pkg" && node postinstall.mjs >/dev/null); fi
    "$bin" --version
}

for name in "${names[@]}"; do
    case $name in
        codex) npm_cli codex @openai/codex 0.171.0 codex ;;
        gemini) npm_cli gemini @google/gemini-cli 0.61.0 gemini ;;
        opencode) npm_cli opencode opencode-ai 1.18.33 opencode ;;
        aider)
            bin="$PREFIX/aider/bin/aider"
            if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF 0.86.2; then
                echo "aider 0.86.2 already installed in $PREFIX/aider"
                continue
            fi
            python3 -m venv "$PREFIX/aider"
            "$PREFIX/aider/bin/pip" install -q "aider-chat==0.86.2"
            "$bin" --version
            ;;
        *) echo "install-clis: unknown CLI '$name' (codex gemini opencode aider)" >&2; exit 2 ;;
    esac
done
