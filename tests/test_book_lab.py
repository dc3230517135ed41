"""``make lab`` checked as a reader would use it: JupyterLab starts on the project's kernel, and chapter 01
opened there runs, cell by cell, with its default parameters. In ``make test`` the synthetic data is
made tiny, to be quick; ``make lab-check`` sets ``THIRTYMUSIC_LAB_PROFILE=default`` and so runs the
chapter's literal defaults.

The server listens on localhost only, with a random token, in a temporary copy of the notebooks folder
(the chapter's default ``build_dir = "../build"`` then lands in that copy); it is stopped at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = os.environ.get("THIRTYMUSIC_KERNEL", "thirtymusic")
#: the profile the chapter's parameters cell is overridden with ("default": its own defaults)
LAB_PROFILE = os.environ.get("THIRTYMUSIC_LAB_PROFILE", "tiny").strip() or "default"
DEADLINE_S = 300 if LAB_PROFILE == "tiny" else 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, data: dict | None = None, method: str = "GET") -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
    return json.loads(text) if text.strip().startswith(("{", "[")) else {"text": text}


def _execute(ws, code: str, timeout: float) -> list[dict]:
    """Run one cell on the kernel's channels websocket; returns the iopub messages of the cell."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))  # fmt: skip
    outputs, reply, idle = [], None, False
    end = time.monotonic() + timeout
    while not (reply and idle):
        if time.monotonic() > end:
            raise TimeoutError(f"cell did not finish in {timeout:.0f} s:\n{code[:200]}")
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if msg["channel"] == "shell" and kind == "execute_reply":
            reply = msg["content"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind in {"error", "stream", "display_data", "execute_result"}:
            outputs.append(msg)
    if reply["status"] != "ok":
        raise AssertionError(
            f"cell failed: {reply.get('ename')}: {reply.get('evalue')}\n{code[:300]}"
        )
    return outputs


@pytest.mark.slow
@pytest.mark.notebook
def test_jupyterlab_runs_chapter_01_on_the_project_kernel(tmp_path):
    import websocket

    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter is not installed beside this Python")
    work = tmp_path / "project"
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "01_user_artist_matrix.ipynb", work / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.port_retries=0", *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=work,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - start > 60:
                    raise RuntimeError(server.stderr.read().decode()[-2000:]) from None
                time.sleep(0.5)
        assert "JupyterLab" in _get(f"{base}/lab", token)["text"]  # the Lab page itself is served
        specs = _get(f"{base}/api/kernelspecs", token)["kernelspecs"]
        assert KERNEL in specs, f"the project's kernel {KERNEL!r} is not installed: {sorted(specs)}"
        nb = _get(f"{base}/api/contents/notebooks/01_user_artist_matrix.ipynb", token)["content"]
        assert (
            nb["metadata"]["kernelspec"]["name"] == KERNEL
        )  # Lab opens it on the project's kernel
        session = _get(f"{base}/api/sessions", token, method="POST", data={
            "path": "notebooks/01_user_artist_matrix.ipynb", "type": "notebook",
            "name": "01_user_artist_matrix.ipynb", "kernel": {"name": KERNEL}})  # fmt: skip
        kernel_id = session["kernel"]["id"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=60
        )
        outputs = []
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            left = DEADLINE_S - (time.monotonic() - start)
            outputs += _execute(ws, cell["source"], timeout=max(5.0, left))
            if "parameters" in cell["metadata"].get("tags", []) and LAB_PROFILE != "default":
                # the defaults as they are, except the size of the synthetic data
                _execute(ws, f"profile = {LAB_PROFILE!r}", timeout=30)
        ws.close()
        assert not [o for o in outputs if o["header"]["msg_type"] == "error"]
        results = json.loads(
            (work / "build" / "artifacts" / "01_user_artist_matrix.json").read_text()
        )
        assert results["data_source"] == "synthetic" and results["n_users"] > 0
        assert results["data_profile"] == LAB_PROFILE
        assert (work / "build" / "data" / f"synthetic-{LAB_PROFILE}-seed0" / "COMPLETE").exists()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
