"""The `smartlinks` command: serve (OPA sidecar + web server, supervised), database migrations,
users and API tokens, and the policy bundle."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from server.ai.cli import register as register_ai_commands
from server.autopilot.cli import register as register_autopilot_commands
from server.autopilot.cli import start_scheduler
from server.config import ConfigError, Settings, log_format_from_env
from server.finance.cli import register as register_finance_commands
from server.policies.cli import register as register_policy_commands

log = logging.getLogger("smartlinks")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("--log-level", default=None, help="Logging level (default: LOG_LEVEL or INFO).")
def main(log_level: str | None) -> None:
    """SmartLinks Autopilot: governed traffic optimisation and payouts."""
    from server.observability.logs import configure_logging

    try:
        log_format = log_format_from_env(os.environ)
        configure_logging(log_level or os.environ.get("LOG_LEVEL", "INFO"), log_format)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(f"logging cannot be configured: {exc}") from exc


# -- database -------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database migrations (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="heads", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from server.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {settings.redacted()['database_url']} is at {revision}")


@db.command("current")
def db_current() -> None:
    """Show the database's migration revision."""
    from server.migrate import current

    current(_settings().database_url)


def _database(settings: Settings) -> Any:
    from server.db import Database

    database = Database()
    database.configure(settings.database_url)
    return database


# -- users and tokens -----------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True)
@click.option("--password", default=None, help="Prompted for when omitted (or generated with --generate).")
@click.option("--generate", is_flag=True, help="Generate a strong password and print it once.")
@click.option("--affiliate", "affiliate_id", default=None, help="The affiliate a user with role affiliate acts for.")
@click.option(
    "--advertiser", "advertiser_id", default=None, help="The advertiser a user with role advertiser acts for."
)
def users_create(
    email: str, role: str, password: str | None, generate: bool, affiliate_id: str | None, advertiser_id: str | None
) -> None:
    """Create a user with ROLE (portal users are better onboarded with `users invite`)."""
    from server.auth.services import AuthError, create_user

    if password is None:
        if generate:
            password = secrets.token_urlsafe(18)
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    database = _database(_settings())
    with database.unit_of_work() as uow:
        try:
            user = create_user(
                uow.session, email, password, role, affiliate_id=affiliate_id, advertiser_id=advertiser_id
            )
        except AuthError as exc:
            raise click.ClickException(str(exc)) from exc
        uow.commit()
        click.echo(f"created user {user.email} with role {user.role}")
    if generate:
        click.echo(f"password (shown once): {password}")


@users.command("invite")
@click.option("--email", required=True, help="Who is invited.")
@click.option("--affiliate", "affiliate_id", default=None, help="Invite to the portal of this affiliate.")
@click.option("--advertiser", "advertiser_id", default=None, help="Invite to the portal of this advertiser.")
def users_invite(email: str, affiliate_id: str | None, advertiser_id: str | None) -> None:
    """Invite a portal user for an affiliate or an advertiser; emails the link (SMTP settings)
    and prints it once. A new invitation for the same email revokes the previous one."""
    from server.errors import Problem
    from server.portal import services as onboarding

    if bool(affiliate_id) == bool(advertiser_id):
        raise click.UsageError("give exactly one of --affiliate and --advertiser")
    kind, entity_id = ("affiliate", affiliate_id) if affiliate_id else ("advertiser", advertiser_id)
    settings = _settings()
    database = _database(settings)
    try:
        with database.unit_of_work() as uow:
            try:
                invitation, token = onboarding.invite(
                    uow.session, settings, kind=kind, entity_id=str(entity_id), email=email, created_by="cli"
                )
                entity = onboarding.get_entity(uow.session, kind, str(entity_id))
            except Problem as exc:
                raise click.ClickException(exc.detail or exc.title) from exc
            uow.commit()
            address, expires_at = invitation.email, invitation.expires_at
    finally:
        database.dispose()
    base = settings.portal_base_url or f"http://{settings.host}:{settings.port}"
    url = f"{base}/portal/invitations/{token}"
    delivery = onboarding.send_invitation_email(settings, to=address, entity=entity, link=url, expires_at=expires_at)
    click.echo(f"invited {address} to the {kind} portal of {entity.name} (email: {delivery})")
    click.echo(f"expires {expires_at.isoformat()}; link (shown once): {url}")


@main.group()
def tokens() -> None:
    """Manage API tokens for services."""


@tokens.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True)
def tokens_create(name: str, role: str) -> None:
    """Create an API token; it is printed once and stored only as a hash."""
    from server.auth.services import AuthError, create_token

    database = _database(_settings())
    with database.unit_of_work() as uow:
        try:
            token, plain = create_token(uow.session, name, role)
        except AuthError as exc:
            raise click.ClickException(str(exc)) from exc
        uow.commit()
        click.echo(f"token {token.id} ({token.name}, role {token.role}); copy it now, it is not shown again:")
    click.echo(plain)


@main.command("bootstrap")
def bootstrap() -> None:
    """Create the first admin when there is no user yet, and print how to log in."""
    from sqlalchemy import func, select

    from server.auth.models import User
    from server.auth.services import AuthError, create_user

    settings = _settings()
    database = _database(settings)
    with database.unit_of_work() as uow:
        if uow.session.scalar(select(func.count()).select_from(User)):
            click.echo("users exist already; log in with your account")
            return
        password = settings.bootstrap_admin_password or secrets.token_urlsafe(18)
        try:
            create_user(uow.session, settings.bootstrap_admin_email, password, "admin")
        except AuthError as exc:
            raise click.ClickException(f"cannot create the first admin: {exc}") from exc
        uow.commit()
    secret_file = Path(settings.var_dir) / "admin-password.txt"
    if not settings.bootstrap_admin_password:
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(password + "\n", encoding="utf-8")
        secret_file.chmod(0o600)
    click.echo("first admin created:")
    click.echo(f"  email:    {settings.bootstrap_admin_email}")
    if settings.bootstrap_admin_password:
        click.echo("  password: the value of BOOTSTRAP_ADMIN_PASSWORD")
    else:
        click.echo(f"  password: {password}   (also in {secret_file}, mode 600; change it after logging in)")


# -- policy bundle ---------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """The Rego policy bundle."""


def build_local_bundle(settings: Settings) -> Any:
    from server.policy.bundle import build_bundle, policy_revision

    rego_dir = Path(settings.rego_dir)
    out = Path(settings.var_dir) / "bundles" / "smartlinks.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    return build_bundle(Path(settings.opa_bin), rego_dir, out, policy_revision(rego_dir))


@policy.command("build")
def policy_build() -> None:
    """Build the bundle from rego/ into var/bundles/ with its revision."""
    info = build_local_bundle(_settings())
    click.echo(f"built {info.path} revision {info.revision} sha256 {info.sha256}")


register_policy_commands(policy)


# -- serving ---------------------------------------------------------------------------------------
@main.command("serve")
@click.option("--host", default=None, help="Bind address (default HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default PORT or 8000).")
@click.option("--workers", default=None, type=int, help="gunicorn workers (default WEB_WORKERS or 2).")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
def serve(host: str | None, port: int | None, workers: int | None, dev: bool) -> None:
    """Serve the app and supervise the OPA sidecars it feeds with bundles.

    Without OPA_URL (bundle-server mode): on the first start, publish and activate the working
    tree's policies (a governed system action); start gunicorn, which serves the active bundle
    at /opa/bundles/active; then start the primary OPA sidecar and the shadow sidecar, both
    polling it (long polling, signed bundles, status and decision logs reported back). With
    OPA_URL the external sidecar is used as it is configured (opa/bundle-server.yaml feeds it from this server)."""
    from server.observability.metrics import use_multiprocess_dir
    from server.policies.serving import BootstrapError, SidecarPlan, bootstrap, plan_sidecars

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    # Before anything creates a metric: this process (the scheduler) and gunicorn's workers write
    # their metrics to files there, and a scrape of /metrics on any worker adds them all up.
    use_multiprocess_dir(Path(settings.var_dir) / "metrics")
    env = dict(os.environ)
    plan: SidecarPlan | None = None
    if settings.opa_url is None:
        if settings.policy_bootstrap:
            try:
                revision = bootstrap(settings, _database(settings))
            except BootstrapError as exc:
                raise click.ClickException(f"no policy version can run: {exc}") from exc
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
            except Exception as exc:
                if "policy_versions" in str(exc):
                    raise click.ClickException(
                        "the database has no policy tables: run `smartlinks db upgrade`"
                    ) from exc
                raise
            if revision:
                click.echo(f"first start: published and activated the working tree's policies as {revision}")
        try:
            plan = plan_sidecars(settings, host, port)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        env.update(plan.env)
    else:
        click.echo(f"using the external OPA sidecar at {settings.opa_url}")

    if dev:
        cmd = [sys.executable, "-m", "flask", "--app", "server.wsgi:app", "run", "--host", host, "--port", str(port)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(workers or settings.workers),
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--graceful-timeout",
            "20",
            "--access-logfile",
            "-",
            "--config",
            "python:server.gunicorn_conf",
            "server.wsgi:app",
        ]
    # The bundle server first: the sidecars fetch their bundle from it.
    web = subprocess.Popen(cmd, env=env)  # noqa: S603 - fixed argv, no shell
    scheduler = None
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        web.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if plan is not None:
            from server.policy.sidecar import SidecarError

            try:
                plan.start(timeout=60, alive=lambda: web.poll() is None and not stopping)
            except SidecarError as exc:
                raise click.ClickException(f"the OPA sidecar did not load its bundle from the server: {exc}") from exc
            click.echo(f"OPA sidecar ready at {plan.primary.url} (bundles from http://{host}:{port}/opa)")
            if plan.shadow is not None:
                click.echo(f"shadow sidecar on {plan.shadow.url} while a version runs in shadow")
        # The autopilot scheduler runs here, in the supervisor, never in the gunicorn workers.
        scheduler = start_scheduler(
            settings, env.get("OPA_URL") or "", env.get("SMARTLINKS_POLICY_REVISION"), env.get("OPA_SHADOW_URL")
        )
        click.echo(f"SmartLinks Autopilot on http://{host}:{port}  (Ctrl-C stops it)")
        database = _database(settings) if plan is not None else None
        checked = 0.0
        while web.poll() is None:
            time.sleep(0.5)
            if plan is not None and database is not None and time.monotonic() - checked >= 2.0:
                plan.reconcile_shadow(database)
                checked = time.monotonic()
    finally:
        if web.poll() is None:
            web.terminate()
            try:
                web.wait(timeout=25)
            except subprocess.TimeoutExpired:
                web.kill()
        if scheduler is not None:
            scheduler.stop()
        if plan is not None:
            plan.stop()
    if not stopping and web.returncode:
        raise SystemExit(web.returncode)


register_autopilot_commands(main)
register_finance_commands(main)
register_ai_commands(main)


if __name__ == "__main__":
    main()
