"""From a Rego tree to a candidate version: `opa build` (signed), `opa check --strict`,
`opa test` with coverage, and the tree's sources. No database: the services store the result.

A tree that does not build or does not pass the strict check is refused (`PipelineError`):
there is nothing to run. A tree that builds and checks but fails tests or the coverage threshold
becomes a version that can be diffed, analysed and shadowed, never activated."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from server.db import utcnow
from server.policy.bundle import BundleBuildError, _git, build_bundle, content_digest, policy_revision

REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,79}$")
SOURCE_SUFFIXES = (".rego", ".json", ".yaml", ".yml", ".md")
MAX_SOURCE_FILES = 500
MAX_SOURCE_BYTES = 512 * 1024


class PipelineError(Exception):
    """The tree cannot become a version; `title` names the step, the message carries OPA's output."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title
        self.message = message


@dataclass(frozen=True)
class TreeState:
    git_commit: str | None  # HEAD when the folder is inside a git work tree with a commit
    dirty: bool  # inside git, with any change (modified, untracked or ignored file) under the folder
    changes: str = ""


@dataclass
class Candidate:
    """A built and validated policy version, not stored yet."""

    revision: str
    bundle: bytes
    sha256: str
    signed: bool
    git_commit: str | None
    check_ok: bool
    check_output: str
    tests_passed: int
    tests_failed: int
    test_failures: list[dict[str, Any]]
    coverage: float | None
    coverage_threshold: float
    sources: dict[str, str]
    built_at: datetime = field(default_factory=utcnow)
    author_hint: str | None = None
    message_hint: str | None = None

    @property
    def validated(self) -> bool:
        return (
            self.check_ok
            and self.tests_failed == 0
            and self.tests_passed > 0
            and self.coverage is not None
            and self.coverage >= self.coverage_threshold
        )


def tree_state(rego_dir: Path) -> TreeState:
    inside = _git(rego_dir, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return TreeState(None, False)
    head = _git(rego_dir, "rev-parse", "--verify", "HEAD")
    status = _git(rego_dir, "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".")
    commit = head.strip() if head and head.strip() else None
    changes = (status or "").strip()
    return TreeState(commit, commit is None or bool(changes), changes)


def read_sources(rego_dir: Path) -> dict[str, str]:
    """Every policy, test and data file under `rego_dir` as text, by POSIX path relative to it."""
    out: dict[str, str] = {}
    for path in sorted(p for p in rego_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(rego_dir).as_posix()
        if not rel.endswith(SOURCE_SUFFIXES) or any(part.startswith(".") for part in PurePosixPath(rel).parts):
            continue
        data = path.read_bytes()
        if len(data) > MAX_SOURCE_BYTES:
            raise PipelineError("Policy source too large", f"{rel} has {len(data)} bytes (at most {MAX_SOURCE_BYTES})")
        out[rel] = data.decode("utf-8", errors="replace")
    if len(out) > MAX_SOURCE_FILES:
        raise PipelineError("Too many policy files", f"{len(out)} files (at most {MAX_SOURCE_FILES})")
    if not any(name.endswith(".rego") for name in out):
        raise PipelineError("No policy", f"no .rego file under {rego_dir}")
    return out


def check_sources(files: dict[str, Any]) -> dict[str, str]:
    """Validate an uploaded {relative path: text} map (paths, types, sizes)."""
    if not isinstance(files, dict) or not files:
        raise PipelineError("No policy", "files must be a non-empty object of {path: text}")
    if len(files) > MAX_SOURCE_FILES:
        raise PipelineError("Too many policy files", f"{len(files)} files (at most {MAX_SOURCE_FILES})")
    clean: dict[str, str] = {}
    for name, text in files.items():
        path = PurePosixPath(str(name))
        if (
            path.is_absolute()
            or not path.parts
            or any(part in ("", ".", "..") or part.startswith(".") for part in path.parts)
            or not str(path).endswith(SOURCE_SUFFIXES)
            or "\\" in str(name)
        ):
            raise PipelineError("Invalid policy file name", f"{name!r}: use a relative path to a .rego or .json file")
        if not isinstance(text, str):
            raise PipelineError("Invalid policy file", f"{name}: the content must be text")
        clean[str(path)] = text
    if not any(name.endswith(".rego") for name in clean):
        raise PipelineError("No policy", "no .rego file in the upload")
    return clean


def write_sources(files: dict[str, str], folder: Path) -> None:
    for name, text in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=str(cwd)
        )
    except FileNotFoundError as exc:
        raise PipelineError("OPA missing", f"opa binary not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise PipelineError("OPA timed out", f"{' '.join(argv[1:3])} took more than {timeout:g}s") from exc


# Built-ins a policy may not call: outbound calls and the process environment (a policy could
# leak OPA's token or phone out), and non-deterministic values (a recorded input would no longer
# replay to the same answer: policies read the time from input.now).
FORBIDDEN_BUILTINS = frozenset(
    {"http.send", "net.lookup_ip_addr", "opa.runtime", "time.now_ns", "rand.intn", "uuid.rfc4122"}
)


def restricted_capabilities(opa_bin: Path, folder: Path, timeout: float = 60.0) -> Path:
    """OPA's current capabilities without FORBIDDEN_BUILTINS, written to `folder`."""
    proc = _run([str(opa_bin), "capabilities", "--current"], folder, timeout)
    try:
        capabilities = json.loads(proc.stdout)
    except ValueError as exc:
        raise PipelineError("OPA capabilities unavailable", proc.stderr.strip() or "opa capabilities failed") from exc
    capabilities["builtins"] = [b for b in capabilities.get("builtins", []) if b.get("name") not in FORBIDDEN_BUILTINS]
    path = folder / "capabilities.json"
    path.write_text(json.dumps(capabilities), encoding="utf-8")
    return path


def run_check(opa_bin: Path, rego_dir: Path, timeout: float = 120.0) -> tuple[bool, str]:
    """`opa check --strict` with the restricted capabilities (see FORBIDDEN_BUILTINS)."""
    with tempfile.TemporaryDirectory(prefix="smartlinks-caps-") as tmp:
        capabilities = restricted_capabilities(opa_bin, Path(tmp))
        proc = _run([str(opa_bin), "check", "--strict", "--capabilities", str(capabilities), "."], rego_dir, timeout)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and any(f"undefined function {name}" in output for name in FORBIDDEN_BUILTINS):
        output += (
            "\n(policies may not call " + ", ".join(sorted(FORBIDDEN_BUILTINS)) + ": no outbound calls, no process "
            "environment, and answers that replay: read the time from input.now)"
        )
    return proc.returncode == 0, output


def run_tests(
    opa_bin: Path, rego_dir: Path, timeout: float = 300.0
) -> tuple[int, int, list[dict[str, Any]], float | None]:
    """(passed, failed, failures, coverage %) of `opa test .` in `rego_dir`."""
    proc = _run([str(opa_bin), "test", "--format", "json", "."], rego_dir, timeout)
    try:
        results = json.loads(proc.stdout) if proc.stdout.strip() else []
    except ValueError:
        results = None
    if not isinstance(results, list):
        detail = (proc.stderr or proc.stdout).strip()[:4000]
        return 0, 1, [{"name": "(opa test)", "location": "", "error": detail or "opa test gave no result"}], None
    failures: list[dict[str, Any]] = []
    passed = 0
    for result in results:
        if not isinstance(result, dict) or result.get("skip"):
            continue
        if result.get("fail") or result.get("error"):
            location = result.get("location") or {}
            error = result.get("error")
            failures.append(
                {
                    "name": f"{str(result.get('package', '')).removeprefix('data.')}.{result.get('name', '?')}",
                    "location": f"{location.get('file', '?')}:{location.get('row', '?')}",
                    "error": error.get("message") if isinstance(error, dict) else (str(error) if error else None),
                }
            )
        else:
            passed += 1
    coverage: float | None = None
    if not failures:
        cov = _run([str(opa_bin), "test", "--coverage", "--format", "json", "."], rego_dir, timeout)
        try:
            report = json.loads(cov.stdout)
            coverage = float(report["coverage"]) if isinstance(report, dict) and "coverage" in report else None
        except (ValueError, TypeError):
            coverage = None
    return passed, len(failures), failures, coverage


def build_candidate(
    opa_bin: Path,
    rego_dir: Path,
    *,
    signing_key: Path | None,
    coverage_threshold: float,
    revision: str | None = None,
    allow_dirty: bool = False,
    git_commit: str | None = None,
) -> Candidate:
    """Build, check and test the tree at `rego_dir` (see the module docstring for what is refused)."""
    rego_dir = Path(rego_dir).resolve()
    if not rego_dir.is_dir():
        raise PipelineError("No policy", f"Rego folder not found: {rego_dir}")
    state = tree_state(rego_dir)
    if state.dirty and not allow_dirty:
        listed = "\n".join(state.changes.splitlines()[:10])
        raise PipelineError(
            "Uncommitted policy changes",
            f"{rego_dir} has changes that are not committed; commit them (the version is then named by the "
            f"commit) or publish anyway with --allow-dirty (named by a content hash):\n{listed}",
        )
    if revision is not None and not REVISION_RE.match(revision):
        raise PipelineError("Invalid revision", f"{revision!r}: letters, digits and . _ : + - only, at most 80")
    sources = read_sources(rego_dir)
    rev = revision or policy_revision(rego_dir)
    commit = git_commit or (state.git_commit if not state.dirty else None)
    with tempfile.TemporaryDirectory(prefix="smartlinks-bundle-") as tmp:
        out = Path(tmp) / "bundle.tar.gz"
        try:
            info = build_bundle(opa_bin, rego_dir, out, rev, signing_key=signing_key, relative=True)
        except BundleBuildError as exc:
            raise PipelineError("Policy build failed", str(exc).replace(str(rego_dir), ".")) from exc
        bundle = out.read_bytes()
    check_ok, check_output = run_check(opa_bin, rego_dir)
    if not check_ok:
        raise PipelineError("Policy check failed", f"opa check --strict refused the policy:\n{check_output}")
    passed, failed, failures, coverage = run_tests(opa_bin, rego_dir)
    author = message = None
    if commit and not state.dirty:
        log = _git(rego_dir, "log", "-1", "--format=%an <%ae>%n%s", commit)
        if log:
            lines = log.splitlines()
            author = lines[0] if lines else None
            message = lines[1] if len(lines) > 1 else None
    return Candidate(
        revision=rev,
        bundle=bundle,
        sha256=info.sha256,
        signed=signing_key is not None,
        git_commit=commit,
        check_ok=check_ok,
        check_output=check_output,
        tests_passed=passed,
        tests_failed=failed,
        test_failures=failures,
        coverage=coverage,
        coverage_threshold=coverage_threshold,
        sources=sources,
        author_hint=author,
        message_hint=message,
    )


def build_uploaded(
    opa_bin: Path,
    files: dict[str, Any],
    *,
    signing_key: Path | None,
    coverage_threshold: float,
    revision: str | None = None,
    git_commit: str | None = None,
) -> Candidate:
    """Build a candidate from uploaded sources; named `revision`, or by the content hash."""
    clean = check_sources(files)
    with tempfile.TemporaryDirectory(prefix="smartlinks-upload-") as tmp:
        folder = Path(tmp) / "rego"
        write_sources(clean, folder)
        rev = revision or "sha256-" + content_digest(folder)[:16]
        return build_candidate(
            opa_bin,
            folder,
            signing_key=signing_key,
            coverage_threshold=coverage_threshold,
            revision=rev,
            allow_dirty=True,
            git_commit=git_commit,
        )
