"""Build OPA bundles from a Rego folder and name the policy revision they carry.

The revision is what OPA reports back (in `provenance`, `/v1/data/system/bundles` and
`/v1/status`), so it must identify the policy text exactly:

* the folder is inside a git work tree and `git status --porcelain --ignored -- <folder>`
  is empty (nothing modified, untracked or ignored in it): the first 12 hex digits of
  `git rev-parse HEAD`;
* otherwise (no git, not a repository, no commit yet, or any local change):
  ``"sha256-" + 16 hex digits`` of a hash over every file under the folder, tests
  included, taken in sorted order of relative POSIX path (see `content_digest`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BundleBuildError",
    "BundleInfo",
    "build_bundle",
    "content_digest",
    "file_sha256",
    "policy_revision",
]

# Test files stay in the repository; they are never shipped to OPA.
TEST_FILE_GLOB = "*_test.rego"
SIGNING_ALG = "RS256"
_GIT_TIMEOUT_S = 10.0


class BundleBuildError(RuntimeError):
    """`opa build` could not produce a bundle; the message carries OPA's own error text."""


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """A bundle file written by `build_bundle`."""

    path: Path
    revision: str
    sha256: str


def _git(rego_dir: Path, *args: str) -> str | None:
    """Run git in `rego_dir`; stdout on success, None on any failure (no git, not a repo...)."""
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "-C", str(rego_dir), *args],  # noqa: S607 - git from PATH on purpose
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout


def content_digest(rego_dir: Path) -> str:
    """Hex SHA-256 over the relative paths and contents of all files under `rego_dir`.

    Each file contributes ``path NUL size NUL content``; files are taken in sorted order
    of their POSIX-style path relative to `rego_dir`, so the digest does not depend on
    the file system's listing order or on where the folder lives.
    """
    files = sorted((p.relative_to(rego_dir).as_posix(), p) for p in rego_dir.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for rel, path in files:
        data = path.read_bytes()
        digest.update(rel.encode("utf-8"))
        digest.update(b"\0")
        digest.update(str(len(data)).encode("ascii"))
        digest.update(b"\0")
        digest.update(data)
    return digest.hexdigest()


def policy_revision(rego_dir: Path) -> str:
    """Revision string for the policies in `rego_dir` (see the module docstring for the rule)."""
    rego_dir = Path(rego_dir).resolve()
    if not rego_dir.is_dir():
        raise FileNotFoundError(f"Rego folder not found: {rego_dir}")
    inside = _git(rego_dir, "rev-parse", "--is-inside-work-tree")
    if inside is not None and inside.strip() == "true":
        head = _git(rego_dir, "rev-parse", "--verify", "HEAD")
        status = _git(rego_dir, "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".")
        if head is not None and head.strip() and status is not None and status.strip() == "":
            return head.strip()[:12]
    return "sha256-" + content_digest(rego_dir)[:16]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_bundle(
    opa_bin: Path,
    rego_dir: Path,
    out: Path,
    revision: str | None = None,
    *,
    timeout: float = 120.0,
    signing_key: Path | None = None,
    relative: bool = False,
) -> BundleInfo:
    """Run ``opa build -b <rego_dir> --revision <rev> --ignore '*_test.rego' -o <out>``.

    `revision` defaults to `policy_revision(rego_dir)`. The bundle is written to a
    temporary file next to `out` and renamed into place, so a reader never sees a
    half-written bundle. Raises `BundleBuildError` (with OPA's stderr) on failure.

    With `signing_key` (a PEM RSA private key) the bundle carries ``.signatures.json``
    (``--signing-key``, RS256): a sidecar configured with the public key refuses it when a
    file was altered, added or removed. With `relative` OPA runs inside `rego_dir` on
    ``.``, so the files in the bundle are named relative to the folder (no build machine
    path) and the same tree gives the same bytes anywhere (OPA writes fixed tar times).
    """
    opa_bin = Path(opa_bin)
    rego_dir = Path(rego_dir)
    out = Path(out)
    if not rego_dir.is_dir():
        raise BundleBuildError(f"Rego folder not found: {rego_dir}")
    rev = policy_revision(rego_dir) if revision is None else revision
    if not rev or any(c.isspace() for c in rev):
        raise BundleBuildError(f"invalid bundle revision {rev!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    argv = [
        str(opa_bin),
        "build",
        "--bundle",
        "." if relative else str(rego_dir),
        "--revision",
        rev,
        "--ignore",
        TEST_FILE_GLOB,
        "--output",
        str(tmp.resolve()),
    ]
    if signing_key is not None:
        argv += ["--signing-key", str(Path(signing_key).resolve()), "--signing-alg", SIGNING_ALG]
    try:
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=str(rego_dir) if relative else None,
            )
        except FileNotFoundError as exc:
            raise BundleBuildError(f"opa binary not found: {opa_bin}") from exc
        except subprocess.TimeoutExpired as exc:
            raise BundleBuildError(f"opa build timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise BundleBuildError(f"cannot run {opa_bin}: {exc}") from exc
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip() or "(no output)"
            raise BundleBuildError(f"opa build of {rego_dir} failed (exit {proc.returncode}):\n{detail}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return BundleInfo(path=out, revision=rev, sha256=file_sha256(out))
