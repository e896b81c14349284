"""The playground: evaluate an input against any stored version with `opa eval` (one short-lived
process, nothing shared with the live sidecars) and point at the rules that decided it."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from server.errors import Problem
from server.policies.models import PolicyVersion

# What the playground may evaluate: the entry points of docs/policy-contract.md.
QUERIES = {
    "smartlinks/decision": "data.smartlinks.decision",
    "smartlinks/authz/result": "data.smartlinks.authz.result",
    "smartlinks/gate": "data.smartlinks.gate",
}
HANDLER_QUERY = "data.smartlinks.handler"
_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_HEAD = re.compile(r"^[A-Za-z_][\w.\[\]\"]*")


def locate_rule(sources: dict[str, str], policy: str, code: str) -> str | None:
    """`file:line` of the rule that produces reason `code` in package smartlinks.<policy>."""
    package = "smartlinks" if policy == "decision" else f"smartlinks.{policy}"
    needle = f'"code": "{code}"'
    for path in sorted(sources):
        text = sources[path]
        if not path.endswith(".rego") or path.endswith("_test.rego"):
            continue
        match = _PACKAGE.search(text)
        if match is None or match.group(1) != package or needle not in text:
            continue
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if needle in line:
                for head in range(number, -1, -1):
                    if _HEAD.match(lines[head]) and not lines[head].startswith(("package", "import")):
                        return f"{path}:{head + 1}"
                return f"{path}:{number + 1}"
    return None


def evaluate(
    opa_bin: Path, version: PolicyVersion, path: str, document: Any, *, timeout: float = 30.0
) -> dict[str, Any]:
    """OPA's answer for `document` at `path` with `version`'s bundle, and the deciding rules."""
    query = QUERIES.get(path)
    if query is None:
        raise Problem(
            400, "Validation failed", f"path must be one of {', '.join(QUERIES)}", errors={"path": ["unknown"]}
        )
    expressions = [query, HANDLER_QUERY] if path != "smartlinks/authz/result" else [query]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smartlinks-playground-") as tmp:
        bundle = Path(tmp) / "bundle.tar.gz"
        bundle.write_bytes(version.bundle)
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [
                    str(opa_bin),
                    "eval",
                    "--bundle",
                    str(bundle),
                    "--format",
                    "json",
                    "--stdin-input",
                    "; ".join(expressions),
                ],
                input=json.dumps(document),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise Problem(504, "Evaluation timed out", f"opa eval took more than {timeout:g}s") from exc
    elapsed = (time.perf_counter() - started) * 1000.0
    if proc.returncode != 0:
        raise Problem(
            422,
            "Evaluation failed",
            (proc.stderr or proc.stdout).strip()[:2000] or "opa eval failed",
            type_="evaluation-failed",
        )
    try:
        payload = json.loads(proc.stdout)
    except ValueError as exc:
        raise Problem(502, "Evaluation failed", "opa eval printed something that is not JSON") from exc
    values: list[Any] = []
    results = payload.get("result") if isinstance(payload, dict) else None
    if isinstance(results, list) and results:
        values = [e.get("value") for e in results[0].get("expressions", [])]
    result = values[0] if values else None
    handler = values[1] if len(values) > 1 else None
    decision = result.get("decision") if path == "smartlinks/gate" and isinstance(result, dict) else result
    if path == "smartlinks/authz/result":
        decision = result
    reasons = decision.get("reasons") if isinstance(decision, dict) else None
    rules = []
    for reason in reasons if isinstance(reasons, list) else []:
        if not isinstance(reason, dict):
            continue
        policy, code = str(reason.get("policy", "")), str(reason.get("code", ""))
        rules.append(
            {
                "policy": policy,
                "code": code,
                "message": reason.get("message"),
                "location": locate_rule(version.sources, policy, code),
            }
        )
    return {
        "revision": version.revision,
        "path": path,
        "defined": bool(values),
        "result": result,
        "handler": handler,
        "rules": rules,
        "duration_ms": round(elapsed, 1),
    }
