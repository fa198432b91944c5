#!/usr/bin/env bash
# `make lab`: JupyterLab on this machine's loopback with Jupyter's token authentication, the
# dango_nb kernel as default, notebooks/ as the root. Jupyter generates a random token and prints
# the URL that carries it (and opens it in a browser when it can): anyone who can reach the port
# still needs the token to open a kernel or terminal. XSRF, Host and Origin checks stay at
# Jupyter's defaults. Extra arguments go to `jupyter lab` (e.g. scripts/lab.sh --port=8899
# --no-browser); VENV names the virtual environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

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

# No token on the command line: other local users can read a process's arguments (ps), not its
# environment. Jupyter uses $JUPYTER_TOKEN when set, else generates one.
args=(
    --ip=127.0.0.1
    --MappingKernelManager.default_kernel_name=dango_nb
)
case " $* " in  # Jupyter refuses a root directory given twice
    *" --notebook-dir="* | *" --ServerApp.root_dir="*) ;;
    *) args+=(--notebook-dir=notebooks) ;;
esac
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)  # containers often run as root; Jupyter refuses it otherwise
fi
exec "$BIN/jupyter" lab "${args[@]}" "$@"
