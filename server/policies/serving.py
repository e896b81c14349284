"""`smartlinks serve` in bundle-server mode: keys and OPA's token, the first version (bootstrap),
and the supervised sidecars configured to poll this server.

Order of start: bootstrap (publish and activate the working tree's policies when no version is
active, as the system actor, decided by a temporary OPA running that very bundle), then gunicorn
(the bundle server), then the primary sidecar and the shadow sidecar, each polling
`<server>/opa/bundles/{active,shadow}`. The gunicorn workers get OPA_URL and OPA_SHADOW_URL."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from server.config import ConfigError, Settings
from server.db import Database
from server.governance.gateway import Gateway
from server.policies import services as policies
from server.policies.impact import temporary_opa
from server.policies.keys import KEY_ID, bundle_token, signing_keys
from server.policies.models import ACTIVE, SHADOW
from server.policies.pipeline import Candidate, PipelineError, build_candidate
from server.policy.opa_client import OpaClient
from server.policy.sidecar import TOKEN_ENV, OpaSidecar, SidecarError, bundle_server_config, write_config

log = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """The first version could not be published or activated; the message says why."""


def bootstrap(
    settings: Settings, database: Database, rego_dir: Path | None = None, *, candidate: Candidate | None = None
) -> str | None:
    """Publish and activate the policies of `rego_dir` (default REGO_DIR; or an already built
    `candidate`) when no version is active. Returns the activated revision, or None when a
    version was active already."""
    with policies.reading(database) as session:
        active = policies.current(session, ACTIVE)
        if active is not None:
            return None
    toolchain = policies.Toolchain.from_settings(settings)
    folder = Path(rego_dir or settings.rego_dir)
    if candidate is None:
        try:
            candidate = build_candidate(
                toolchain.opa_bin,
                folder,
                signing_key=toolchain.signing_key,
                coverage_threshold=toolchain.coverage_threshold,
                allow_dirty=True,
            )
        except PipelineError as exc:
            raise BootstrapError(f"the policies in {folder} cannot run: {exc.title}: {exc.message}") from exc
    if not candidate.validated:
        problems = []
        if candidate.tests_failed:
            names = ", ".join(f["name"] for f in candidate.test_failures[:5])
            problems.append(f"{candidate.tests_failed} failing test(s): {names}")
        if candidate.coverage is None or candidate.coverage < candidate.coverage_threshold:
            problems.append(f"coverage {candidate.coverage} below {candidate.coverage_threshold}%")
        raise BootstrapError(f"the policies in {folder} failed validation: {'; '.join(problems) or 'no test ran'}")
    with temporary_opa(
        toolchain.opa_bin, candidate.bundle, verification_key=toolchain.verification_key, name="bootstrap"
    ) as opa:
        client = OpaClient(opa.url, connect_timeout=1.0, timeout=5.0)
        gateway = Gateway(client, mode=settings.mode)
        try:
            with policies.reading(database) as session:
                known = policies.find_version(session, candidate.revision) is not None
            if not known:
                outcome, _ = policies.publish_candidate(
                    database,
                    gateway,
                    toolchain,
                    policies.SYSTEM_ACTOR,
                    candidate,
                    message=candidate.message_hint or "bootstrap: the working tree's policies",
                    source="bootstrap",
                    bootstrap=True,
                )
                if not outcome.allow:
                    raise BootstrapError(f"publishing {candidate.revision} was refused: {_reasons(outcome.reasons)}")
            with database.unit_of_work() as uow:
                outcome = policies.activate(
                    uow.session, gateway, toolchain, policies.SYSTEM_ACTOR, candidate.revision, bootstrap=True
                )
                uow.commit()
            if not outcome.allow:
                raise BootstrapError(f"activating {candidate.revision} was refused: {_reasons(outcome.reasons)}")
        finally:
            client.close()
    log.info("bootstrap: version %s published and activated", candidate.revision)
    return candidate.revision


def _reasons(reasons: list[dict[str, object]]) -> str:
    return "; ".join(str(r.get("message") or r.get("code")) for r in reasons)


def service_url(host: str, port: int) -> str:
    """The server's /opa base URL as the local sidecars reach it."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1", "localhost", "::", "") else host  # noqa: S104
    return f"http://{reach}:{port}/opa"


@dataclass
class SidecarPlan:
    """The sidecars `serve` supervises and the environment the web workers need."""

    primary: OpaSidecar
    shadow: OpaSidecar | None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 30.0, alive: Callable[[], bool] = lambda: True) -> None:
        """Start the primary sidecar and wait until it has activated its first bundle (fetched
        from the server); give up early when `alive()` turns false (the web server exited). The
        shadow sidecar starts only while a version is in shadow (`reconcile_shadow`)."""
        self.primary.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.primary.wait_ready(min(1.0, max(0.1, deadline - time.monotonic())))
                break
            except SidecarError:
                if not alive() or time.monotonic() >= deadline or not self.primary.alive():
                    raise
        self.primary.supervise()

    def reconcile_shadow(self, database: Database) -> None:
        """Run the shadow sidecar exactly while some version is in shadow (checked by `serve`
        every few seconds): no idle process, and it loads the version as soon as it starts."""
        if self.shadow is None:
            return
        try:
            with policies.reading(database) as session:
                wanted = policies.current(session, SHADOW) is not None
        except Exception:  # the database is briefly unavailable: keep the current state
            log.warning("cannot read the shadow version; the shadow sidecar keeps its state")
            return
        if wanted and not self.shadow.alive():
            self.shadow.start()
            self.shadow.supervise()
            log.info("shadow sidecar started on %s", self.shadow.url)
        elif not wanted and self.shadow.alive():
            self.shadow.stop()
            log.info("shadow sidecar stopped (no version in shadow)")

    def stop(self) -> None:
        for sidecar in (self.shadow, self.primary):
            if sidecar is not None:
                sidecar.stop()

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[SidecarPlan]:
        try:
            self.start(timeout)
            yield self
        finally:
            self.stop()


def plan_sidecars(settings: Settings, host: str, port: int, *, shadow: bool = True) -> SidecarPlan:
    """Keys, token and configuration files for the primary (and shadow) sidecar."""
    token = bundle_token(settings)
    if token is None:
        raise ConfigError("production serves bundles to OPA only with OPA_BUNDLE_TOKEN (or OPA_BUNDLE_TOKEN_FILE) set")
    keys = signing_keys(settings)
    var = Path(settings.var_dir)
    url = service_url(host, port)
    sidecars: dict[str, OpaSidecar] = {}
    for name, resource, opa_port, logs in (
        ("primary", "bundles/active", settings.opa_port, settings.opa_decision_logs),
        ("shadow", "bundles/shadow", settings.opa_shadow_port, False),
    ):
        if name == "shadow" and (not shadow or settings.opa_shadow_url):
            continue
        config = write_config(
            var / f"opa-{name}.json",
            bundle_server_config(
                service_url=url,
                verification_key_pem=keys.public_pem(),
                key_id=KEY_ID,
                resource=resource,
                sidecar=name,
                long_poll_seconds=settings.opa_long_poll_seconds,
                decision_logs=logs,
            ),
        )
        sidecars[name] = OpaSidecar(
            Path(settings.opa_bin),
            None,
            var / ("opa.log" if name == "primary" else f"opa-{name}.log"),
            port=opa_port,
            config_file=config,
            env={TOKEN_ENV: token},
            ready_timeout=30,
        )
    primary = sidecars["primary"]
    shadow_sidecar = sidecars.get("shadow")
    # The workers read the token as the supervisor did (OPA_BUNDLE_TOKEN[_FILE] or var/).
    env = {"OPA_URL": primary.url}
    if shadow_sidecar is not None:
        env["OPA_SHADOW_URL"] = shadow_sidecar.url
    return SidecarPlan(primary, shadow_sidecar, env)
