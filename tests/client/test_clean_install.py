"""The client installs with one `pip install` and imports without the server's stack."""

import subprocess
import venv
from pathlib import Path

import pytest

from tests.client.conftest import CLIENT_DIR

SERVER_ONLY = ("tensorflow", "keras", "fastapi", "redis")
CHECK = f"""
import importlib.util, sys
import lstm_stream_client, lstm_stream_client.cli, lstm_stream_client.websocket
missing = [name for name in {SERVER_ONLY!r} if importlib.util.find_spec(name) is None]
loaded = [name for name in sys.modules if name.split(".")[0] in {SERVER_ONLY!r}]
print(len(missing), len(loaded))
"""


@pytest.mark.slow
def test_the_client_installs_in_a_clean_virtualenv_without_the_server_stack(
    tmp_path: Path,
) -> None:
    # A plain virtualenv (no system site-packages) has none of the server's packages;
    # pip's cache makes the second run quick.
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(CLIENT_DIR)],
        check=True,
        timeout=600,
    )
    checked = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, check=True)
    assert checked.stdout.split() == [str(len(SERVER_ONLY)), "0"]
    usage = subprocess.run(
        [tmp_path / "venv" / "bin" / "lstm-stream", "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0 and "predict" in usage.stdout
