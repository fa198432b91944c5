#!/usr/bin/env bash
# `make lab`: JupyterLab on this machine's loopback with Jupyter's token authentication, the
# dango_nb kernel as default, notebooks/ as the root. Jupyter generates a random token and prints
# the URL that carries it (and opens it in a browser when it can): anyone who can reach the port
# still needs the token to open a kernel or terminal. XSRF, Host and Origin checks stay at
# Jupyter's defaults. Extra arguments go to `jupyter lab` (e.g. scripts/lab.sh --port=8899
# --no-browser), except those that switch the authentication off or open the server to other
# machines or sites (an empty token, XSRF check off, another ip, remote access, allowed origins):
# they are refused unless --insecure (not passed on) says the user means it. VENV names the virtual
# environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

refuse() {  # $1: the option as given, $2: what it does
    echo "lab: error: refusing $1 ($2); add --insecure to start Jupyter that way anyway" >&2
    exit 2
}

insecure=0
user=()
for a in "$@"; do
    if [ "$a" = "--insecure" ]; then insecure=1; else user+=("$a"); fi
done

# Each option as name and value: --Class.trait=value, --Class.trait value, --alias=value; the trait
# name decides (any class: ServerApp, NotebookApp, IdentityProvider, ...). Quotes that reached us
# literally ('' or "") count as empty.
weakening=()
empty_token=""
password=0
empty="''"
for ((i = 0; i < ${#user[@]}; i++)); do
    a="${user[i]}"
    case "$a" in --*) ;; *) continue ;; esac
    if [[ "$a" == *=* ]]; then
        name="${a%%=*}" value="${a#*=}" shown="$a"
    else
        name="$a" value="" shown="$a"
        if ((i + 1 < ${#user[@]})) && [[ "${user[i + 1]}" != --* ]]; then
            value="${user[i + 1]}" shown="$a ${user[i + 1]:-$empty}"
        fi
    fi
    trait="${name#--}"
    trait="${trait##*.}"
    trait="${trait,,}"
    case "$value" in "''" | '""') value="" ;; esac
    lower="${value,,}"
    case "$trait" in
        token)
            if [ -z "$value" ]; then empty_token="$shown"; fi ;;
        password | hashed_password)
            if [ -n "$value" ]; then password=1; fi ;;
        disable_check_xsrf)
            case "$lower" in false | 0) ;; *) weakening+=("$shown|switches the XSRF check off") ;; esac ;;
        allow_remote_access)
            case "$lower" in false | 0) ;; *) weakening+=("$shown|accepts requests addressed to other hosts") ;; esac ;;
        allow_origin | allow_origin_pat)
            if [ -n "$value" ]; then weakening+=("$shown|lets pages of other sites call the server"); fi ;;
        tornado_settings)
            if [[ "$lower" == *xsrf* ]]; then weakening+=("$shown|changes the XSRF check"); fi ;;
        ip)
            case "$lower" in 127.0.0.1 | localhost | ::1 | "[::1]") ;;
                *) weakening+=("$shown|listens beyond this machine's loopback") ;; esac ;;
    esac
done
if [ -n "$empty_token" ] && [ "$password" -eq 0 ]; then
    weakening=("$empty_token|an empty token without a password switches the authentication off" ${weakening[@]+"${weakening[@]}"})
fi
if [ "${#weakening[@]}" -gt 0 ]; then
    if [ "$insecure" -eq 0 ]; then
        refuse "${weakening[0]%%|*}" "${weakening[0]#*|}"
    fi
    for w in "${weakening[@]}"; do
        echo "lab: warning: --insecure: passing ${w%%|*} (${w#*|})" >&2
    done
fi

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
case " ${user[*]} " in  # Jupyter refuses a root directory given twice
    *" --notebook-dir="* | *" --ServerApp.root_dir="*) ;;
    *) args+=(--notebook-dir=notebooks) ;;
esac
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)  # containers often run as root; Jupyter refuses it otherwise
fi
exec "$BIN/jupyter" lab "${args[@]}" ${user[@]+"${user[@]}"}
