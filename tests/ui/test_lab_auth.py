"""`make lab` keeps Jupyter's authentication: a random token, XSRF and Host checks, loopback only.

``test_lab_script_*`` run in ``make test`` (they run scripts/lab.sh against a stand-in ``jupyter``
that records its arguments, and check that options weakening the authentication are refused
without ``--insecure``). The request tests need the real server and run with the browser test
(``make test-ui``), against the same server the browser uses.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SH = REPO / "scripts" / "lab.sh"
KERNEL_NAME = "dango_nb"

# Options that switch off or widen Jupyter's access control; lab.sh must pass none of them.
WEAKENING = ("token=", "password=", "disable_check_xsrf", "allow_origin", "allow_remote_access",
             "allow_unauthenticated", "ip=0.0.0.0", "ip=*", "ip=::")

FAKE_JUPYTER = """#!/usr/bin/env bash
case "$1" in
    kernelspec) printf 'Available kernels:\\n  dango_nb    /venv/share/jupyter/kernels/dango_nb\\n' ;;
    labextension) echo '   @jupyter-widgets/jupyterlab-manager v5.0.16 enabled OK (python, jupyterlab_widgets)' ;;
    lab) shift; printf '%s\\n' "$@" > "$ARGS_OUT" ;;
    *) exit 3 ;;
esac
"""


# Environment variables through which Jupyter finds its token or configuration.
JUPYTER_ENV = ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH")


def _run_lab_sh(tmp_path: Path, *extra: str, env: dict[str, str] | None = None
                ) -> tuple[subprocess.CompletedProcess, list[str] | None]:
    """Runs scripts/lab.sh with a stand-in jupyter in VENV, HOME in tmp_path (no user config) and
    ``env`` added: the process and the arguments it handed to `jupyter lab` (None when it did not
    start Jupyter)."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    (venv_bin / "jupyter").write_text(FAKE_JUPYTER)
    (venv_bin / "jupyter").chmod(0o755)
    out = tmp_path / "args.txt"
    out.unlink(missing_ok=True)
    run_env = {k: v for k, v in os.environ.items() if k not in JUPYTER_ENV}
    run_env.update(VENV=str(tmp_path / "venv"), ARGS_OUT=str(out), HOME=str(tmp_path / "home"),
                   **(env or {}))
    proc = subprocess.run(["bash", str(LAB_SH), *extra], env=run_env, capture_output=True, text=True,
                          timeout=60)
    return proc, (out.read_text().splitlines() if out.exists() else None)


def _lab_sh_args(tmp_path: Path, *extra: str) -> list[str]:
    """The arguments scripts/lab.sh hands to `jupyter lab` (it must start it)."""
    proc, args = _run_lab_sh(tmp_path, *extra)
    assert proc.returncode == 0 and args is not None, proc.stderr
    return args


def test_lab_script_keeps_jupyter_auth_on_loopback(tmp_path):
    args = _lab_sh_args(tmp_path, "--no-browser")
    assert "--ip=127.0.0.1" in args and "--notebook-dir=notebooks" in args and "--no-browser" in args
    weak = [a for a in args if any(w in a for w in WEAKENING)]
    assert not weak, f"lab.sh weakens Jupyter's authentication: {weak}"
    assert (os.geteuid() == 0) == ("--allow-root" in args)


def test_lab_script_takes_another_root_and_keeps_the_token_off_the_command_line(tmp_path):
    args = _lab_sh_args(tmp_path, "--notebook-dir=/elsewhere", "--port=8899")
    assert [a for a in args if "notebook-dir" in a] == ["--notebook-dir=/elsewhere"]
    assert "--port=8899" in args
    # A token given as an argument would be readable by every local user (ps); Jupyter takes it
    # from $JUPYTER_TOKEN or generates one.
    assert not any("token" in a.lower() for a in args)


# Options a user may add that switch the authentication off or open the server to other machines
# or sites, each with the option the refusal names.
REFUSED = [
    (["--IdentityProvider.token="], "--IdentityProvider.token="),
    (["--ServerApp.token="], "--ServerApp.token="),
    (["--NotebookApp.token="], "--NotebookApp.token="),
    (["--IdentityProvider.token=''"], "--IdentityProvider.token=''"),
    (["--ServerApp.token", ""], "--ServerApp.token ''"),
    (["--ServerApp.token=", "--ServerApp.password=''"], "--ServerApp.token="),
    # A password does not make an empty token safe: Jupyter ignores an unknown class's password.
    (["--Foo.password=x", "--ServerApp.token="], "--ServerApp.token="),
    (["--ServerApp.token=", "--ServerApp.password=argon2:$abc"], "--ServerApp.token="),
    (['--ServerApp.token=""'], '--ServerApp.token=""'),
    (["-IdentityProvider.token="], "-IdentityProvider.token="),
    (["--ServerApp.disable_check_xsrf=True"], "--ServerApp.disable_check_xsrf=True"),
    (["--ServerApp.disable_check_xsrf"], "--ServerApp.disable_check_xsrf"),
    (["--ip=0.0.0.0"], "--ip=0.0.0.0"),
    (["--ip", "0.0.0.0"], "--ip 0.0.0.0"),
    (["--ip=*"], "--ip=*"),
    (["--ServerApp.ip="], "--ServerApp.ip="),
    (["--ServerApp.ip=::"], "--ServerApp.ip=::"),
    (["--NotebookApp.ip=192.168.1.5"], "--NotebookApp.ip=192.168.1.5"),
    (["--ServerApp.allow_remote_access=True"], "--ServerApp.allow_remote_access=True"),
    (["--ServerApp.allow_origin=*"], "--ServerApp.allow_origin=*"),
    (["--ServerApp.allow_origin_pat=.*"], "--ServerApp.allow_origin_pat=.*"),
    (["--ServerApp.tornado_settings={'xsrf_cookies': False}"], "--ServerApp.tornado_settings={'xsrf_cookies': False}"),
    (["--ServerApp.tornado_settings={'local_hostnames': ['evil.example']}"],
     "--ServerApp.tornado_settings={'local_hostnames': ['evil.example']}"),
    (["-ServerApp.ip=0.0.0.0"], "-ServerApp.ip=0.0.0.0"),
    (["--ServerApp.local_hostnames=['evil.example']"], "--ServerApp.local_hostnames=['evil.example']"),
    (["--ServerApp.local_hostnames", "evil.example"], "--ServerApp.local_hostnames evil.example"),
    (["--ServerApp.allow_unauthenticated_access=True"], "--ServerApp.allow_unauthenticated_access=True"),
    (["--ServerApp.trust_xheaders=True"], "--ServerApp.trust_xheaders=True"),
    (["--ServerApp.allow_credentials=True"], "--ServerApp.allow_credentials=True"),
    (["--ServerApp.cookie_options={'samesite': 'None'}"], "--ServerApp.cookie_options={'samesite': 'None'}"),
    (["--ServerApp.identity_provider_class=my.Provider"], "--ServerApp.identity_provider_class=my.Provider"),
    (["--ServerApp.authorizer_class=my.Authorizer"], "--ServerApp.authorizer_class=my.Authorizer"),
    (["--config=/tmp/evil_config.py"], "--config=/tmp/evil_config.py"),
    (["--config", "/tmp/evil_config.py"], "--config /tmp/evil_config.py"),
    (["--ServerApp.config_file=/tmp/evil_config.py"], "--ServerApp.config_file=/tmp/evil_config.py"),
]


@pytest.mark.parametrize("extra, named", REFUSED, ids=[" ".join(e) for e, _ in REFUSED])
def test_lab_script_refuses_options_that_weaken_the_authentication(tmp_path, extra, named):
    proc, args = _run_lab_sh(tmp_path, "--no-browser", *extra)
    assert proc.returncode == 2 and args is None, (proc.returncode, args)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lab: error: refusing {named} (") and "--insecure" in lines[0], lines


def test_lab_script_passes_weakening_options_with_insecure_and_says_so(tmp_path):
    extra = ["--ip=0.0.0.0", "--IdentityProvider.token=", "--ServerApp.disable_check_xsrf=True"]
    proc, args = _run_lab_sh(tmp_path, *extra, "--insecure", "--no-browser")
    assert proc.returncode == 0 and args is not None, proc.stderr
    assert args[-4:] == [*extra, "--no-browser"] and "--insecure" not in args
    warned = proc.stderr.strip().splitlines()
    assert len(warned) == 3 and all(w.startswith("lab: warning: --insecure: passing ") for w in warned), warned
    assert {w.split("passing ")[1].split(" (")[0] for w in warned} == set(extra)


@pytest.mark.parametrize("extra", [
    ["--ServerApp.ip=localhost"], ["--ip=::1"], ["--ServerApp.disable_check_xsrf=False"],
    ["--ServerApp.allow_remote_access=False"], ["--ServerApp.trust_xheaders=False"],
    ["--ServerApp.local_hostnames=[]"], ["--IdentityProvider.token=0123456789abcdef0123456789abcdef"],
    ["--ServerApp.password=argon2:$abc"],
    ["--port", "8899"], ["notebooks/03_loss_schedules.ipynb"],
])
def test_lab_script_passes_options_that_keep_the_authentication(tmp_path, extra):
    proc, args = _run_lab_sh(tmp_path, *extra)
    assert proc.returncode == 0 and args is not None, proc.stderr
    assert args[-len(extra):] == extra and proc.stderr == ""


def _refusal(proc: subprocess.CompletedProcess, args: list[str] | None) -> str:
    """The one line lab.sh printed when it refused to start Jupyter."""
    assert proc.returncode == 2 and args is None, (proc.returncode, args, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), lines
    return lines[0]


@pytest.mark.parametrize("name, content", [
    ("dev-null", None), ("empty", ""), ("blank", " \n"),
])
def test_lab_script_refuses_a_token_file_without_a_token(tmp_path, name, content):
    token_file = Path(os.devnull) if content is None else tmp_path / f"{name}.txt"
    if content is not None:
        token_file.write_text(content)
    line = _refusal(*_run_lab_sh(tmp_path, env={"JUPYTER_TOKEN_FILE": str(token_file)}))
    assert line.startswith(f"lab: error: refusing JUPYTER_TOKEN_FILE={token_file} (the file is empty or blank")
    assert line.endswith("add --insecure to start Jupyter that way anyway")
    proc, args = _run_lab_sh(tmp_path, "--insecure", env={"JUPYTER_TOKEN_FILE": str(token_file)})
    assert proc.returncode == 0 and args is not None and "passing JUPYTER_TOKEN_FILE=" in proc.stderr


def test_lab_script_refuses_an_unreadable_token_file(tmp_path):
    missing = tmp_path / "missing.txt"
    line = _refusal(*_run_lab_sh(tmp_path, env={"JUPYTER_TOKEN_FILE": str(missing)}))
    assert line == f"lab: error: JUPYTER_TOKEN_FILE={missing}: not a readable file (Jupyter reads its token from it)"


@pytest.mark.parametrize("env", [
    {"JUPYTER_TOKEN": ""},  # Jupyter then generates a token (it tests the variable for truth)
    {"JUPYTER_TOKEN_FILE": "TOKEN_FILE"},
    {"JUPYTER_TOKEN": "0123456789abcdef0123456789abcdef", "JUPYTER_TOKEN_FILE": os.devnull},
], ids=["empty JUPYTER_TOKEN", "token file", "JUPYTER_TOKEN before the token file"])
def test_lab_script_starts_with_a_token_from_the_environment(tmp_path, env):
    token_file = tmp_path / "token.txt"
    token_file.write_text("0123456789abcdef0123456789abcdef\n")
    env = {k: str(token_file) if v == "TOKEN_FILE" else v for k, v in env.items()}
    proc, args = _run_lab_sh(tmp_path, env=env)
    assert proc.returncode == 0 and args is not None and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("var", ["JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH"])
def test_lab_script_refuses_config_from_other_places(tmp_path, var):
    line = _refusal(*_run_lab_sh(tmp_path, env={var: str(tmp_path / "cfg")}))
    assert line == (f"lab: error: refusing {var}={tmp_path / 'cfg'} (loads configuration that can switch "
                    "the authentication off); add --insecure to start Jupyter that way anyway")


EVIL_CONFIG = "c.ServerApp.ip = '0.0.0.0'\nc.IdentityProvider.token = ''\n"


@pytest.mark.parametrize("file, content, named", [
    ("jupyter_server_config.py", "# c.ServerApp.token = ''\n" + EVIL_CONFIG,
     "jupyter_server_config.py:3 (sets IdentityProvider.token,"),
    ("jupyter_lab_config.py", "c.ServerApp.local_hostnames = ['evil.example']\n",
     "jupyter_lab_config.py:1 (sets ServerApp.local_hostnames,"),
    ("jupyter_server_config.json", '{\n  "ServerApp": {\n    "disable_check_xsrf": true\n  }\n}\n',
     "jupyter_server_config.json:3 (sets disable_check_xsrf,"),
])
def test_lab_script_refuses_user_config_that_weakens_the_authentication(tmp_path, file, content, named):
    config = tmp_path / "home" / ".jupyter"
    config.mkdir(parents=True)
    (config / file).write_text(content)
    line = _refusal(*_run_lab_sh(tmp_path))
    assert line.startswith(f"lab: error: refusing {config / named}"), line
    # Settings the command line beats, and comments, are harmless.
    (config / file).write_text("# c.IdentityProvider.token = ''\nc.ServerApp.ip = '0.0.0.0'\nc.ServerApp.port = 9\n")
    proc, args = _run_lab_sh(tmp_path)
    assert proc.returncode == 0 and args is not None and proc.stderr == "", proc.stderr


def _why_traits() -> list[str]:
    """The trait names scripts/lab.sh's why() judges."""
    body = LAB_SH.read_text().split("\nwhy() {\n", 1)[1].split("\n}\n", 1)[0]
    labels = re.findall(r"^        ([a-z_ |]+)\)$", body, flags=re.M)
    return [name.strip() for label in labels for name in label.split("|")]


def test_lab_script_judges_traits_of_the_installed_jupyter():
    from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider
    from jupyter_server.serverapp import ServerApp
    from jupyterlab.labapp import LabApp

    known = {name for cls in (ServerApp, LabApp, IdentityProvider, PasswordIdentityProvider)
             for name in cls.class_trait_names(config=True)}
    judged = _why_traits()
    assert {"token", "ip", "local_hostnames", "allow_remote_access", "config_file"} <= set(judged)
    assert not set(judged) - known, f"lab.sh judges traits the installed Jupyter lacks: {set(judged) - known}"
    # The user config files are checked for the same traits, less those the command line beats.
    scanned = re.findall(r"^traits\+?='\|?([a-z_|]+)'$", LAB_SH.read_text(), flags=re.M)
    assert set("|".join(scanned).split("|")) == set(judged) - {"ip", "config_file", "config_file_name"}


def _jupyter_config(args: list[str], config_dir: Path, monkeypatch) -> tuple[str, str]:
    """ip and token that Jupyter's own command-line and config-file handling make of ``args``, with
    the user config in ``config_dir`` (the server is not started)."""
    from jupyter_server.serverapp import ServerApp

    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    for var in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "JUPYTER_CONFIG_PATH"):
        monkeypatch.delenv(var, raising=False)
    app = ServerApp()
    app.parse_command_line([a for a in args if a != "--allow-root"])
    app.load_config_file()
    return app.ip, app.identity_provider_class(parent=app, log=app.log).token


@pytest.mark.filterwarnings("ignore:Supporting extra quotes:DeprecationWarning")
def test_lab_script_names_what_jupyter_makes_of_a_quoted_token(tmp_path, monkeypatch):
    # Quotes that reach Jupyter: '' is read as an empty token, "" as a token of two quote characters.
    (tmp_path / "config").mkdir()
    assert _jupyter_config(["--IdentityProvider.token=''"], tmp_path / "config", monkeypatch)[1] == ""
    assert _jupyter_config(['--IdentityProvider.token=""'], tmp_path / "config", monkeypatch)[1] == '""'
    assert "(an empty token switches" in _refusal(*_run_lab_sh(tmp_path, "--IdentityProvider.token=''"))
    assert "(Jupyter takes the two quote characters as the token" in _refusal(
        *_run_lab_sh(tmp_path, '--IdentityProvider.token=""'))


@pytest.mark.parametrize("extra, ip", [
    ([], "127.0.0.1"), (["--ip=localhost"], "localhost"), (["--ServerApp.ip=127.0.0.1"], "127.0.0.1"),
    (["--ip", "::1"], "::1"), (["--insecure", "--ip=0.0.0.0"], "0.0.0.0"),
])
def test_lab_script_passes_one_ip_that_jupyter_accepts(tmp_path, monkeypatch, extra, ip):
    args = _lab_sh_args(tmp_path, *extra)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    assert _jupyter_config(args, config_dir, monkeypatch)[0] == ip


def test_lab_script_ip_beats_a_config_file_and_a_config_token_is_refused(tmp_path, monkeypatch):
    # The command line beats config files: lab.sh's ip holds against a config file's. A token in
    # a config file would win (lab.sh cannot put the token on the command line), so it refuses one.
    config_dir = tmp_path / "home" / ".jupyter"
    config_dir.mkdir(parents=True)
    (config_dir / "jupyter_server_config.py").write_text("c.ServerApp.ip = '0.0.0.0'\n")
    args = _lab_sh_args(tmp_path)
    assert _jupyter_config(args, config_dir, monkeypatch)[0] == "127.0.0.1"
    (config_dir / "jupyter_server_config.py").write_text(EVIL_CONFIG)
    assert _jupyter_config(args, config_dir, monkeypatch) == ("127.0.0.1", "")
    _refusal(*_run_lab_sh(tmp_path))


# -- against the running server (make test-ui) ---------------------------------------------------

def _kernel_ids(server) -> set[str]:
    return {k["id"] for k in server.api("/api/kernels")}


@pytest.mark.ui
@pytest.mark.skipif(os.environ.get("DANGO_UI", "") != "1",
                    reason="needs a JupyterLab server: run `make test-ui` (or set DANGO_UI=1)")
def test_lab_refuses_requests_without_the_token(lab_server, ui_report_dir):
    s = lab_server
    codes: dict[str, int] = {}
    # Jupyter's own token: printed in the URL the user opens, random, long.
    assert s.login_url == f"{s.url}/lab?token={s.token}"
    assert len(s.token) >= 32 and s.token not in ("", "None")
    kernels_before = _kernel_ids(s)

    for name, (path, method, token, body, headers) in {
        "GET /api/kernels, no token": ("/api/kernels", "GET", None, None, None),
        "POST /api/kernels, no token": ("/api/kernels", "POST", None, {"name": KERNEL_NAME}, None),
        "POST /api/sessions, no token": ("/api/sessions", "POST", None,
                                         {"path": "x.ipynb", "type": "notebook",
                                          "kernel": {"name": KERNEL_NAME}}, None),
        "GET /api/contents, no token": ("/api/contents", "GET", None, None, None),
        "GET /api/kernels, wrong token": ("/api/kernels", "GET", s.token[:-1] + "x", None, None),
        "POST /api/kernels, wrong token": ("/api/kernels", "POST", "0" * len(s.token),
                                           {"name": KERNEL_NAME}, None),
        # DNS rebinding: the right token from a page served under another host name.
        "GET /api/kernels, token, Host evil.example": ("/api/kernels", "GET", s.token, None,
                                                       {"Host": f"evil.example:{s.port}"}),
    }.items():
        codes[name] = s.request(path, method, token=token, body=body, headers=headers)[0]
    refused = {k: v for k, v in codes.items() if v not in (401, 403)}
    assert not refused, f"requests without valid credentials were not refused: {refused}"
    assert _kernel_ids(s) == kernels_before, "a refused request started a kernel"

    # With the token: listed, started, stopped.
    codes["GET /api/kernels, token"], _ = s.request("/api/kernels", token=s.token)
    codes["POST /api/kernels, token"], kernel = s.request("/api/kernels", "POST", token=s.token,
                                                          body={"name": KERNEL_NAME})
    assert codes["GET /api/kernels, token"] == 200 and codes["POST /api/kernels, token"] == 201
    assert kernel["id"] in _kernel_ids(s) - kernels_before
    codes["DELETE /api/kernels/<id>, token"], _ = s.request(f"/api/kernels/{kernel['id']}", "DELETE",
                                                            token=s.token)
    assert codes["DELETE /api/kernels/<id>, token"] == 204 and _kernel_ids(s) == kernels_before

    # The one-click URL logs a browser in (cookie); the cookie alone does not pass the XSRF check.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(s.login_url, timeout=30) as r:
        codes["GET login URL"] = r.status
    cookies = {c.name: c.value for c in jar}
    assert codes["GET login URL"] == 200 and "_xsrf" in cookies and any(n.startswith("username-") for n in cookies)

    def cookie_call(method, path, body=None, headers=None):
        req = urllib.request.Request(s.url + path, method=method, headers=dict(headers or {}),
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with opener.open(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            return err.code, None

    codes["GET /api/kernels, login cookie"], _ = cookie_call("GET", "/api/kernels")
    codes["POST /api/kernels, login cookie, no XSRF header"], _ = cookie_call(
        "POST", "/api/kernels", {"name": KERNEL_NAME})
    assert codes["GET /api/kernels, login cookie"] == 200
    assert codes["POST /api/kernels, login cookie, no XSRF header"] == 403
    assert _kernel_ids(s) == kernels_before
    codes["POST /api/kernels, login cookie + X-XSRFToken"], kernel = cookie_call(
        "POST", "/api/kernels", {"name": KERNEL_NAME}, {"X-XSRFToken": cookies["_xsrf"]})
    assert codes["POST /api/kernels, login cookie + X-XSRFToken"] == 201
    s.api(f"/api/kernels/{kernel['id']}", "DELETE")

    (ui_report_dir / "auth.json").write_text(json.dumps(codes, indent=1))
    print(json.dumps(codes, indent=1))
