"""opa/install.sh, fast paths only: reuse an existing OPA binary given as OPA_BIN."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "opa" / "install.sh"
OPA = REPO / ".tools" / "bin" / "opa"
VERSION = "1.22.3"


@pytest.fixture(scope="module")
def real_opa() -> Path:
    if not (OPA.exists() and os.access(OPA, os.X_OK)):
        pytest.fail(f"{OPA} is missing: run `bash opa/install.sh` first")
    return OPA.resolve()


def run_install(tools_dir: Path, opa_bin: Path | str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",  # no opa and no go on PATH: only OPA_BIN can satisfy it
        "HOME": str(tools_dir / "home"),
        "TOOLS_DIR": str(tools_dir),
        "OPA_BIN": str(opa_bin),
    }
    argv = ["bash", str(SCRIPT)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def opa_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("Version:"))


def test_install_links_opa_bin_and_is_idempotent(real_opa: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    first = run_install(tools, real_opa)
    assert first.returncode == 0, first.stderr
    assert "via OPA_BIN" in first.stderr
    target = tools / "bin" / "opa"
    assert os.access(target, os.X_OK)
    assert target.resolve() == real_opa
    assert opa_version(target) == VERSION

    second = run_install(tools, real_opa)
    assert second.returncode == 0, second.stderr
    assert "already at Version: 1.22.3" in second.stderr
    assert opa_version(target) == VERSION


def test_install_replaces_a_broken_link(real_opa: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "opa").symlink_to(tmp_path / "gone" / "opa")
    result = run_install(tools, real_opa)
    assert result.returncode == 0, result.stderr
    assert opa_version(tools / "bin" / "opa") == VERSION


def test_script_is_strict_bash() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert 'OPA_VERSION="${OPA_VERSION:-1.22.3}"' in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
