#!/usr/bin/env bash
# `make lab`: JupyterLab on this machine's loopback, no token or password (local use only), the
# dango_nb kernel as default, notebooks/ as the root. Extra arguments go to `jupyter lab`
# (e.g. scripts/lab.sh --port=8899 --no-browser).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if ! "$BIN/jupyter" kernelspec list 2>/dev/null | grep -q '^ *dango_nb '; then
    echo "lab: kernel dango_nb is not registered; run 'make install'" >&2
    exit 1
fi
# ipywidgets 8 ships its JupyterLab extension in the jupyterlab_widgets package: no build step.
if ! "$BIN/jupyter" labextension list 2>&1 | grep -q '@jupyter-widgets/jupyterlab-manager.*enabled'; then
    echo "lab: the ipywidgets extension (@jupyter-widgets/jupyterlab-manager) is missing or" \
         "disabled; reinstall jupyterlab_widgets ('make install')" >&2
    exit 1
fi

args=(
    --notebook-dir=notebooks
    --ip=127.0.0.1
    --IdentityProvider.token=
    --ServerApp.password=
    --MappingKernelManager.default_kernel_name=dango_nb
)
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)  # containers often run as root; Jupyter refuses it otherwise
fi
exec "$BIN/jupyter" lab "${args[@]}" "$@"
