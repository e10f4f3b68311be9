"""Write .vscode/.env.compose-servers: the host URLs of the compose Redis and TimescaleDB, from .env.

The "<role> · compose servers" launch configurations load that file (envFile), so they use the
password and host ports .env gives docker compose (POSTGRES_PASSWORD, REDIS_HOST_PORT,
POSTGRES_HOST_PORT) instead of copies of them. The task that starts the compose servers runs this
first. The written file holds the password: like .env it is git-ignored (.env.*).

    python .vscode/compose_servers_env.py [ENV_FILE [OUT_FILE]]
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

HERE = Path(__file__).resolve().parent
DEFAULT_ENV = HERE.parent / ".env"
DEFAULT_OUT = HERE / ".env.compose-servers"
CONFIG_ERROR_EXIT = 78  # as tradebot exits on a bad setting


def server_urls(env: dict[str, str | None]) -> dict[str, str]:
    """REDIS_URL and DATABASE_URL of the compose servers as published on 127.0.0.1."""
    password = env.get("POSTGRES_PASSWORD")
    if not password:
        raise ValueError("set POSTGRES_PASSWORD in .env (cp env.example .env), as docker compose requires")
    redis_port = env.get("REDIS_HOST_PORT") or "6379"
    postgres_port = env.get("POSTGRES_HOST_PORT") or "5432"
    return {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{postgres_port}/tradebot",
    }


def main(argv: list[str]) -> int:
    env_file = Path(argv[0]) if argv else DEFAULT_ENV
    out_file = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    if not env_file.exists():
        print(f"{env_file} not found: cp env.example .env and set POSTGRES_PASSWORD", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    try:
        urls = server_urls(dotenv_values(env_file))
    except ValueError as error:
        print(error, file=sys.stderr)
        return CONFIG_ERROR_EXIT
    out_file.touch(mode=0o600)  # private before the password goes in
    out_file.chmod(0o600)
    out_file.write_text("".join(f"{name}={value}\n" for name, value in urls.items()))
    print(f"wrote {out_file.name}: REDIS_URL and DATABASE_URL of the compose servers (from {env_file.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
