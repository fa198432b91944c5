#!/usr/bin/env bash
# `make lab`: JupyterLab on this machine's loopback with Jupyter's token authentication, the
# dango_nb kernel as default, notebooks/ as the root. Jupyter generates a random token and prints
# the URL that carries it (and opens it in a browser when it can): anyone who can reach the port
# still needs the token to open a kernel or terminal. XSRF, Host and Origin checks stay at
# Jupyter's defaults. Extra arguments go to `jupyter lab` (e.g. scripts/lab.sh --port=8899
# --no-browser), except those that switch the authentication off or open the server to other
# machines or sites (see why() below), a token file that is empty, and configuration from other
# places (--config, $JUPYTER_CONFIG_DIR, $JUPYTER_CONFIG_PATH) or user config files that set one of
# those traits: they are refused unless --insecure (not passed on) says the user means it. VENV
# names the virtual environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

insecure=0
user=()
for a in "$@"; do
    if [ "$a" = "--insecure" ]; then insecure=1; else user+=("$a"); fi
done

# Why setting trait $1 (lower case, any class) to $2 weakens Jupyter's access control; nothing when
# it does not. Each name here is a trait of the installed jupyter_server or jupyterlab (a test
# checks it, so a renamed trait is noticed).
why() {
    local lower="${2,,}"
    case "$1" in
        token)
            case "$2" in
                "" | "''") echo "an empty token switches the authentication off" ;;
                '""') echo "Jupyter takes the two quote characters as the token, which anyone can guess" ;;
            esac ;;
        disable_check_xsrf)
            case "$lower" in false | 0) ;; *) echo "switches the XSRF check off" ;; esac ;;
        allow_remote_access)
            case "$lower" in false | 0) ;; *) echo "accepts requests addressed to other hosts" ;; esac ;;
        allow_unauthenticated_access)
            case "$lower" in false | 0) ;; *) echo "lets requests without credentials reach unguarded endpoints" ;; esac ;;
        trust_xheaders)
            case "$lower" in false | 0) ;; *) echo "trusts X-Forwarded and X-Real-Ip headers sent by clients" ;; esac ;;
        allow_credentials)
            case "$lower" in false | 0) ;; *) echo "lets pages of other sites send the user's cookies" ;; esac ;;
        local_hostnames)
            case "$2" in "" | "[]") ;; *) echo "widens the Host check to other names" ;; esac ;;
        allow_origin | allow_origin_pat)
            case "$2" in "" | "''" | '""') ;; *) echo "lets pages of other sites call the server" ;; esac ;;
        tornado_settings)
            case "$2" in "" | "{}") ;; *) echo "overrides the server's security settings" ;; esac ;;
        cookie_options | get_secure_cookie_kwargs)
            case "$2" in "" | "{}") ;; *) echo "changes how the login cookie is set or checked" ;; esac ;;
        identity_provider_class | authorizer_class | login_handler_class)
            echo "replaces Jupyter's authentication" ;;
        config_file | config_file_name)
            echo "loads configuration that can switch the authentication off" ;;
        ip)
            case "$lower" in 127.0.0.1 | localhost | ::1 | "[::1]") ;;
                *) echo "listens beyond this machine's loopback" ;; esac ;;
    esac
}

# Each option as name and value: --Class.trait=value, --Class.trait value, --alias=value (one dash
# works too); the trait name decides, whatever the class (ServerApp, NotebookApp, IdentityProvider,
# ...). `--config` is the alias of config_file.
weakening=()
user_ip=0
empty="''"
for ((i = 0; i < ${#user[@]}; i++)); do
    a="${user[i]}"
    case "$a" in -*) ;; *) continue ;; esac
    if [[ "$a" == *=* ]]; then
        name="${a%%=*}" value="${a#*=}" shown="$a"
    else
        name="$a" value="" shown="$a"
        if ((i + 1 < ${#user[@]})) && [[ "${user[i + 1]}" != -* ]]; then
            value="${user[i + 1]}" shown="$a ${user[i + 1]:-$empty}"
        fi
    fi
    trait="${name#-}"
    trait="${trait#-}"
    trait="${trait##*.}"
    trait="${trait,,}"
    if [ "$trait" = config ]; then trait=config_file; fi
    case "$name" in --ip | --ServerApp.ip | -ServerApp.ip) user_ip=1 ;; esac
    reason="$(why "$trait" "$value")"
    if [ -n "$reason" ]; then weakening+=("$shown|$reason"); fi
done

# The environment: a token file Jupyter would read as the token, and other configuration places.
# (An empty $JUPYTER_TOKEN is harmless: Jupyter then generates a token.)
if [ -z "${JUPYTER_TOKEN:-}" ] && [ -n "${JUPYTER_TOKEN_FILE:-}" ]; then
    if [ ! -r "$JUPYTER_TOKEN_FILE" ] || [ -d "$JUPYTER_TOKEN_FILE" ]; then
        echo "lab: error: JUPYTER_TOKEN_FILE=$JUPYTER_TOKEN_FILE: not a readable file (Jupyter reads its token from it)" >&2
        exit 2
    elif ! grep -q '[^[:space:]]' "$JUPYTER_TOKEN_FILE"; then
        weakening+=("JUPYTER_TOKEN_FILE=$JUPYTER_TOKEN_FILE|the file is empty or blank: Jupyter would take that as its token")
    fi
fi
for var in JUPYTER_CONFIG_DIR JUPYTER_CONFIG_PATH; do
    if [ -n "${!var:-}" ]; then
        weakening+=("$var=${!var}|loads configuration that can switch the authentication off")
    fi
done
# The user's config files: the command line, and so the ip, beats them, but they can set any other
# trait (the token above all). A line that sets a trait why() names is refused.
traits='token|disable_check_xsrf|allow_remote_access|allow_unauthenticated_access|trust_xheaders'
traits+='|allow_credentials|local_hostnames|allow_origin|allow_origin_pat|tornado_settings|cookie_options'
traits+='|get_secure_cookie_kwargs|identity_provider_class|authorizer_class|login_handler_class'
config_dir="${JUPYTER_CONFIG_DIR:-${HOME:-/nonexistent}/.jupyter}"
for f in "$config_dir"/jupyter*config.py "$config_dir"/jupyter*config.json "$config_dir"/jupyter*config.d/*.json; do
    [ -f "$f" ] || continue
    case "$f" in *.py) pattern="^[^#]*\\.($traits)[[:space:]]*=" ;; *) pattern="\"($traits)\"[[:space:]]*:" ;; esac
    line="$(grep -nE "$pattern" "$f" | head -n 1 || true)"
    if [ -n "$line" ] && [[ "$line" =~ ([A-Za-z_]*[.\"]($traits))[^A-Za-z_] ]]; then
        weakening+=("$f:${line%%:*}|sets ${BASH_REMATCH[1]//\"/}, which can switch the authentication off or open the server")
    fi
done

if [ "${#weakening[@]}" -gt 0 ]; then
    if [ "$insecure" -eq 0 ]; then
        echo "lab: error: refusing ${weakening[0]%%|*} (${weakening[0]#*|}); add --insecure to start Jupyter that way anyway" >&2
        exit 2
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
# environment. Jupyter uses $JUPYTER_TOKEN when set, else generates one. One ip only: Jupyter
# refuses a second one, so a user's (accepted) ip replaces the loopback default; the command line
# beats config files.
args=(--MappingKernelManager.default_kernel_name=dango_nb)
if [ "$user_ip" -eq 0 ]; then
    args=(--ip=127.0.0.1 "${args[@]}")
fi
case " ${user[*]} " in  # Jupyter refuses a root directory given twice
    *" --notebook-dir="* | *" --ServerApp.root_dir="*) ;;
    *) args+=(--notebook-dir=notebooks) ;;
esac
if [ "$(id -u)" -eq 0 ]; then
    args+=(--allow-root)  # containers often run as root; Jupyter refuses it otherwise
fi
exec "$BIN/jupyter" lab "${args[@]}" ${user[@]+"${user[@]}"}
