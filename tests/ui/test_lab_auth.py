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


def _run_lab_sh(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[str] | None]:
    """Runs scripts/lab.sh with a stand-in jupyter in VENV: the process and the arguments it handed
    to `jupyter lab` (None when it did not start Jupyter)."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    (venv_bin / "jupyter").write_text(FAKE_JUPYTER)
    (venv_bin / "jupyter").chmod(0o755)
    out = tmp_path / "args.txt"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    env.update(VENV=str(tmp_path / "venv"), ARGS_OUT=str(out))
    proc = subprocess.run(["bash", str(LAB_SH), *extra], env=env, capture_output=True, text=True,
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
    ["--ServerApp.allow_remote_access=False"], ["--ServerApp.token=", "--ServerApp.password=argon2:$abc"],
    ["--port", "8899"], ["notebooks/03_loss_schedules.ipynb"],
])
def test_lab_script_passes_options_that_keep_the_authentication(tmp_path, extra):
    proc, args = _run_lab_sh(tmp_path, *extra)
    assert proc.returncode == 0 and args is not None, proc.stderr
    assert args[-len(extra):] == extra and proc.stderr == ""


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
