"""`smartlinks policy ...`: publish, list, diff, activate, rollback, impact, shadow, status and
export-sample, registered on the `policy` group by server.cli.

The commands work on the database directly (like `users create`), as the person running them:
`--as EMAIL` acts as that user with the user's role; without it the actor is `cli:<login>` with
the admin role (whoever runs the CLI holds the database credentials). Each change is still a
governed `policy.*` action: it is decided by the running policy, asked of the local sidecar
(OPA_URL, or 127.0.0.1:OPA_PORT while `smartlinks serve` runs), or else of a temporary OPA
running the active version."""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from server.config import ConfigError, Settings
from server.db import Database
from server.governance.gateway import Actor, Gateway, Outcome
from server.policies import impact, services
from server.policies.models import ACTIVE
from server.policies.pipeline import PipelineError, build_candidate
from server.policy.opa_client import OpaClient


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _database_for(settings: Settings) -> Iterator[Database]:
    database = Database()
    database.configure(settings.database_url)
    try:
        yield database
    finally:
        database.dispose()


def _database(settings: Settings) -> Database:
    """The database for this command, disposed (connections closed) when the command ends."""
    database: Database = click.get_current_context().with_resource(_database_for(settings))
    return database


def _toolchain(settings: Settings) -> services.Toolchain:
    try:
        return services.Toolchain.from_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _actor(database: Database, email: str | None) -> Actor:
    if email is None:
        return Actor(id=f"cli:{getpass.getuser()}", kind="user", roles=("admin",))
    from server.auth.models import User

    with services.reading(database) as session:
        user = session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None or not user.active:
            raise click.ClickException(f"no active user {email}")
        return Actor(id=f"user:{user.id}", kind="user", roles=(user.role,))


@contextlib.contextmanager
def governing(settings: Settings, database: Database, toolchain: services.Toolchain) -> Iterator[Gateway]:
    """A gateway to the running policy: the configured or local sidecar when it answers, else a
    temporary OPA on the active version's bundle (or on nothing: then every change is denied)."""
    url = settings.opa_url or f"http://127.0.0.1:{settings.opa_port}"
    client = OpaClient(url, connect_timeout=0.5, timeout=5.0)
    healthy, _ = client.health(bundles=True)
    if healthy:
        try:
            yield Gateway(client, mode=settings.mode)
        finally:
            client.close()
        return
    client.close()
    with services.reading(database) as session:
        active = services.current(session, ACTIVE)
        bundle = active.bundle if active is not None else None
        signed = active.signed if active is not None else False
    if bundle is None:
        raise click.ClickException(
            "no OPA answers and no version is active: start `smartlinks serve` once (it activates the working "
            "tree's policies) or set OPA_URL"
        )
    with impact.temporary_opa(
        toolchain.opa_bin, bundle, verification_key=toolchain.verification_key if signed else None, name="cli"
    ) as opa:
        temporary = OpaClient(opa.url, connect_timeout=1.0, timeout=5.0)
        try:
            yield Gateway(temporary, mode=settings.mode)
        finally:
            temporary.close()


def _decided(outcome: Outcome, done: str) -> None:
    if outcome.allow:
        click.echo(done)
        click.echo(f"decision {outcome.decision_id} (policy revision {outcome.revision})")
        return
    click.echo(f"refused by policy (decision {outcome.decision_id}):", err=True)
    for reason in outcome.reasons:
        click.echo(f"  - {reason.get('code')}: {reason.get('message')}", err=True)
    raise SystemExit(1)


def _problem(exc: Exception) -> click.ClickException:
    detail = getattr(exc, "detail", None) or str(exc)
    title = getattr(exc, "title", None)
    return click.ClickException(f"{title}: {detail}" if title else detail)


def register(policy: click.Group) -> None:
    """Add the lifecycle commands to the `smartlinks policy` group."""

    @policy.command("publish")
    @click.option(
        "--rego",
        "rego_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Rego folder (default REGO_DIR, rego/ in the checkout).",
    )
    @click.option("-m", "--message", default=None, help="What changed (default: the commit's subject).")
    @click.option("--allow-dirty", is_flag=True, help="Publish uncommitted changes (named by a content hash).")
    @click.option("--as", "as_email", default=None, help="Act as this user (their role applies).")
    def publish(rego_dir: Path | None, message: str | None, allow_dirty: bool, as_email: str | None) -> None:
        """Build, check, test, sign and store the working tree's policies as a new version."""
        settings = _settings()
        database, toolchain = _database(settings), _toolchain(settings)
        folder = rego_dir or Path(settings.rego_dir)
        click.echo(f"building {folder} (opa build --signing-key, opa check --strict, opa test --coverage) ...")
        try:
            candidate = build_candidate(
                toolchain.opa_bin,
                folder,
                signing_key=toolchain.signing_key,
                coverage_threshold=toolchain.coverage_threshold,
                allow_dirty=allow_dirty,
            )
        except PipelineError as exc:
            raise click.ClickException(f"{exc.title}: {exc.message}") from exc
        actor = _actor(database, as_email)
        with governing(settings, database, toolchain) as gateway:
            try:
                outcome, version = services.publish_candidate(
                    database, gateway, toolchain, actor, candidate, message=message
                )
            except Exception as exc:
                raise _problem(exc) from exc
        _decided(
            outcome,
            f"published {candidate.revision} ({len(candidate.bundle)} bytes, sha256 {candidate.sha256[:16]}...)",
        )
        cov = "unknown" if candidate.coverage is None else f"{candidate.coverage:.1f}%"
        click.echo(f"tests: {candidate.tests_passed} passed, {candidate.tests_failed} failed; coverage {cov}")
        if version is not None and not version.validated:
            for failure in candidate.test_failures[:20]:
                click.echo(f"  FAIL {failure['name']} ({failure['location']}) {failure.get('error') or ''}", err=True)
            raise click.ClickException(
                f"{candidate.revision} is stored as a draft but cannot be activated: "
                + "; ".join(version.validation_problems())
            )
        click.echo(
            f"next: smartlinks policy impact {candidate.revision}; smartlinks policy activate {candidate.revision}"
        )

    @policy.command("list")
    def list_versions() -> None:
        """Every published version, newest first."""
        database = _database(_settings())
        with services.reading(database) as session:
            rows = services.list_versions(session)
            if not rows:
                click.echo("no version published yet")
            for v in rows:
                cov = "  -  " if v.coverage is None else f"{v.coverage:5.1f}%"
                check = "ok" if v.validated else "FAILED"
                tests = f"{v.tests_passed:>3}/{v.tests_passed + v.tests_failed:<3}"
                click.echo(
                    f"{v.revision:<24} {v.status:<8} {check:<6} tests {tests} "
                    f"cov {cov} {v.built_at:%Y-%m-%d %H:%M} {v.author:<20} {v.message[:50]}"
                )

    @policy.command("diff")
    @click.argument("old")
    @click.argument("new")
    @click.option("--stat", is_flag=True, help="Only the files and their line counts.")
    def diff(old: str, new: str, stat: bool) -> None:
        """Per-file Rego diff between two versions."""
        database = _database(_settings())
        with services.reading(database) as session:
            try:
                a, b = services.get_version(session, old), services.get_version(session, new)
            except Exception as exc:
                raise _problem(exc) from exc
            changed = [d for d in services.diff_versions(a, b) if d.change != "unchanged"]
        if not changed:
            click.echo(f"{old} and {new} have the same sources")
        for d in changed:
            if stat:
                click.echo(f"{d.change:<8} {d.path} +{d.added} -{d.removed}")
            else:
                click.echo("\n".join(d.lines))

    @policy.command("activate")
    @click.argument("revision")
    @click.option("--reason", default=None, help="Why (required when the impact is above the policy's threshold).")
    @click.option("--as", "as_email", default=None, help="Act as this user (their role applies).")
    def activate(revision: str, reason: str | None, as_email: str | None) -> None:
        """Make REVISION the enforced version (impact analysis first when missing)."""
        settings = _settings()
        database, toolchain = _database(settings), _toolchain(settings)
        actor = _actor(database, as_email)
        with governing(settings, database, toolchain) as gateway:
            try:
                report = services.ensure_impact(database, toolchain, revision, actor.id)
                if report is not None:
                    click.echo(
                        f"impact on {report.sample_size} decisions: {report.allow_to_deny} allow->deny, "
                        f"{report.deny_to_allow} deny->allow ({report.changed_share:.2%} changed)"
                    )
                outcome = services.activate_version(database, gateway, toolchain, actor, revision, reason=reason)
            except Exception as exc:
                raise _problem(exc) from exc
        _decided(outcome, f"{revision} is active; the sidecars load it within seconds")

    @policy.command("rollback")
    @click.option("--reason", default=None)
    @click.option("--as", "as_email", default=None, help="Act as this user (their role applies).")
    def rollback(reason: str | None, as_email: str | None) -> None:
        """Return to the previously active version."""
        settings = _settings()
        database, toolchain = _database(settings), _toolchain(settings)
        actor = _actor(database, as_email)
        with governing(settings, database, toolchain) as gateway:
            try:
                outcome = services.rollback_version(database, gateway, toolchain, actor, reason=reason)
            except Exception as exc:
                raise _problem(exc) from exc
        _decided(outcome, f"rolled back to {outcome.params.get('revision')}")

    @policy.command("impact")
    @click.argument("revision", required=False)
    @click.option(
        "--sample",
        "sample_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Replay a recorded sample (JSON lines) instead of the database's decisions.",
    )
    @click.option(
        "--candidate",
        "candidate_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="With --sample: the candidate Rego folder (default REGO_DIR).",
    )
    @click.option(
        "--baseline",
        "baseline_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="With --sample: the baseline Rego folder (e.g. the base branch's rego/).",
    )
    @click.option("--limit", default=None, type=int, help="Decisions to replay (default POLICY_IMPACT_SAMPLE).")
    @click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
    @click.option("--as", "as_email", default=None)
    def impact_command(
        revision: str | None,
        sample_file: Path | None,
        candidate_dir: Path | None,
        baseline_dir: Path | None,
        limit: int | None,
        fmt: str,
        as_email: str | None,
    ) -> None:
        """What REVISION (or, with --sample, a Rego folder) would change on recorded decisions."""
        settings = _settings()
        toolchain = _toolchain(settings)
        if sample_file is not None:
            summary, size, names = _impact_of_folders(
                settings, toolchain, sample_file, candidate_dir, baseline_dir, limit
            )
            _print_impact(summary, size, names, fmt)
            return
        if revision is None:
            raise click.UsageError("give a REVISION, or --sample FILE with --baseline DIR")
        database = _database(settings)
        actor = _actor(database, as_email)
        try:
            report = services.run_impact(database, toolchain, revision, actor.id, sample=limit)
        except Exception as exc:
            raise _problem(exc) from exc
        _print_impact(report.summary, report.sample_size, (revision, report.baseline_revision or "nothing"), fmt)
        click.echo(f"report #{report.id} ({report.duration_ms / 1000:.1f} s)", err=True)

    @policy.group("shadow")
    def shadow() -> None:
        """Evaluate live decisions with a candidate version too, never enforced."""

    @shadow.command("start")
    @click.argument("revision")
    @click.option("--as", "as_email", default=None)
    def shadow_start(revision: str, as_email: str | None) -> None:
        settings = _settings()
        database, toolchain = _database(settings), _toolchain(settings)
        with governing(settings, database, toolchain) as gateway:
            try:
                outcome = services.start_shadow_version(
                    database, gateway, toolchain, _actor(database, as_email), revision
                )
            except Exception as exc:
                raise _problem(exc) from exc
        _decided(outcome, f"{revision} runs in shadow")

    @shadow.command("stop")
    @click.option("--as", "as_email", default=None)
    def shadow_stop(as_email: str | None) -> None:
        settings = _settings()
        database, toolchain = _database(settings), _toolchain(settings)
        with governing(settings, database, toolchain) as gateway:
            outcome = services.stop_shadow_version(database, gateway, toolchain, _actor(database, as_email))
        _decided(outcome, "shadow stopped")

    @policy.command("status")
    def status() -> None:
        """Active and shadow versions, what each sidecar runs, alerts, recent activations."""
        database = _database(_settings())
        with database.unit_of_work() as uow:
            state = services.overview(uow.session)
            uow.commit()
        click.echo(json.dumps(state, indent=2, default=str))

    @policy.command("sidecar-config")
    @click.option("--url", "service_url", required=True, help="The server's /opa URL as the sidecar reaches it.")
    @click.option("--sidecar", type=click.Choice(["primary", "shadow"]), default="primary", show_default=True)
    @click.option("--no-decision-logs", is_flag=True, help="Leave the decision_logs plugin off.")
    @click.option(
        "--token-path",
        default=None,
        help="A file OPA reads the bearer token from (a container secret) instead of ${SMARTLINKS_OPA_TOKEN}.",
    )
    def sidecar_config(service_url: str, sidecar: str, no_decision_logs: bool, token_path: str | None) -> None:
        """Print the OPA configuration of a sidecar fed by this server (JSON, which OPA reads as
        YAML): long polling, the verification key, status and decision logs. The bearer token is
        left as ${SMARTLINKS_OPA_TOKEN} for OPA to expand from its environment, or read by OPA from
        --token-path."""
        from server.policies.keys import KEY_ID
        from server.policy.sidecar import bundle_server_config

        settings = _settings()
        toolchain = _toolchain(settings)
        assert toolchain.verification_key is not None
        config = bundle_server_config(
            service_url=service_url,
            verification_key_pem=toolchain.verification_key.read_text(encoding="utf-8"),
            key_id=KEY_ID,
            resource="bundles/active" if sidecar == "primary" else "bundles/shadow",
            sidecar=sidecar,
            long_poll_seconds=settings.opa_long_poll_seconds,
            decision_logs=sidecar == "primary" and not no_decision_logs,
            token_path=token_path,
        )
        click.echo(json.dumps(config, indent=2, sort_keys=True))

    @policy.command("bootstrap")
    def policy_bootstrap() -> None:
        """Publish and activate the working tree's policies when no version is active (a governed
        system action, decided by a temporary OPA on the candidate itself). `smartlinks serve` does
        this by itself when it supervises its sidecars; run it before `serve` when the sidecars are
        external (OPA_URL), as docker-compose.yml does. Does nothing when a version is active."""
        from server.policies.serving import BootstrapError, bootstrap

        settings = _settings()
        try:
            revision = bootstrap(settings, _database(settings))
        except BootstrapError as exc:
            raise click.ClickException(f"no policy version can run: {exc}") from exc
        if revision:
            click.echo(f"published and activated the working tree's policies as {revision}")
        else:
            click.echo("a policy version is active already: nothing to do")

    @policy.command("export-sample")
    @click.option("--limit", default=1000, show_default=True, type=int)
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
    def export_sample(limit: int, output: Path | None) -> None:
        """Write the last recorded decisions as a JSON-lines sample for `policy impact --sample`.
        The inputs are as recorded: mask them before committing a sample to a repository."""
        from server.governance.models import Decision

        database = _database(_settings())
        with services.reading(database) as session:
            rows = session.scalars(select(Decision).order_by(Decision.created_at.desc()).limit(limit)).all()
            lines = list(impact.iter_sample_lines(rows))
        target = output.open("w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
        with target as handle:
            for line in lines:
                handle.write(line + "\n")
        click.echo(f"{len(lines)} decisions", err=True)


def _impact_of_folders(
    settings: Settings,
    toolchain: services.Toolchain,
    sample_file: Path,
    candidate_dir: Path | None,
    baseline_dir: Path | None,
    limit: int | None,
) -> tuple[dict[str, Any], int, tuple[str, str]]:
    if baseline_dir is None:
        raise click.UsageError("--sample needs --baseline DIR (the Rego folder to compare with)")
    try:
        items = impact.load_sample_file(sample_file, limit or settings.policy_impact_sample)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    sides = []
    for folder in (candidate_dir or Path(settings.rego_dir), baseline_dir):
        with tempfile.TemporaryDirectory() as tmp:
            from server.policy.bundle import BundleBuildError, build_bundle, policy_revision

            try:
                info = build_bundle(
                    toolchain.opa_bin, folder, Path(tmp) / "b.tar.gz", policy_revision(folder), relative=True
                )
            except BundleBuildError as exc:
                raise click.ClickException(str(exc)) from exc
            sides.append(impact.Side(info.revision, info.path.read_bytes(), signed=False))
    summary = impact.run(toolchain.opa_bin, items, sides[0], sides[1], verification_key=None)
    return summary, len(items), (sides[0].revision, sides[1].revision)


def _print_impact(summary: dict[str, Any], size: int, names: tuple[str, str], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"candidate": names[0], "baseline": names[1], "sample_size": size, **summary}, indent=2))
        return
    text = impact.markdown(summary, size, names[0], names[1])
    click.echo(text if fmt == "markdown" else text.replace("**", "").replace("`", ""))
