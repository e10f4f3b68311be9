"""The API process: a port another program holds is a setting to change (exit 78), not a crash loop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tradebot.api.history_service import port_taken
from tradebot.common.runtime import CONFIG_ERROR_EXIT


def test_a_taken_api_port_stops_the_api_with_one_line_naming_api_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1"}
        done = subprocess.run(
            [sys.executable, "-m", "tradebot.api.history_service"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == CONFIG_ERROR_EXIT
    assert done.stderr.strip() == (
        f"127.0.0.1:{port} is in use by another program; set API_PORT to a free port (or stop that program)"
    )
    assert not port_taken("127.0.0.1", port)  # released once its holder closed
