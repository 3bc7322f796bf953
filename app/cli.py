"""The `visioncraft` command: serve, migrate, manage keys, sync Stripe, generate images locally."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import math
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from opentelemetry.trace import NoOpTracerProvider
from pydantic import ValidationError

from app.accounts.credits import MAX_GRANT_CREDITS
from app.accounts.keys import KeyMode, describe_key
from app.api.schemas.images import ImageGenerationCreate
from app.billing.catalog import is_sellable_plan, pack_item, plan_item, sync_catalog
from app.billing.gateway import StripeGateway
from app.container import Services, build_backends, build_services
from app.errors import ServiceError
from app.generation.backend import ImageSpec
from app.generation.options import (
    ASPECT_RATIOS,
    MAX_IMAGES_PER_REQUEST,
    MAX_SEED,
    STYLES,
    ImageSize,
    compose_prompt,
)
from app.settings import Settings
from app.startup import prepare_database
from app.storage.database import DatabaseNotMigratedError, upgrade_database
from app.storage.tables import utc_now
from telemetry import configure_logging

T = TypeVar("T")


class CommandError(Exception):
    """A failure to report in one line, with exit status 1."""


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    services = build_services(settings)
    try:
        await prepare_database(services)
        yield services
    finally:
        await services.aclose()


def command_serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from app.main import create_app
    from app.serving import GracefulServer

    if args.workers != 1:
        raise CommandError(
            f"--workers {args.workers} is not supported: metrics are per process, so run one worker "
            "per container and scale with replicas (Kubernetes) or several `serve` processes."
        )
    settings = settings.model_copy(
        update={"host": args.host or settings.host, "port": args.port or settings.port}
    )
    check_port_free(settings.host, settings.port)
    configure_logging(json_lines=settings.resolved_log_format == "json", level=settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        # uvicorn takes whole seconds here; the lifespan keeps generations to the exact grace.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    server = GracefulServer(
        config,
        lifecycle=app.state.lifecycle,
        drain_s=settings.shutdown_drain_s,
        grace_s=settings.shutdown_grace_s,
    )
    server.run()


def check_port_free(host: str, port: int) -> None:
    """Raise CommandError when `host:port` cannot be bound, before any start-up work is done."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CommandError(f"Cannot listen on {host!r}: {error.strerror}.") from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        # The same option uvicorn sets, so that a port in TIME_WAIT is not reported as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise CommandError(
                f"Cannot listen on {host}:{port}: {error.strerror}. Another process may use the "
                "port: pick another with --port or VISIONCRAFT_PORT."
            ) from None


def command_migrate(settings: Settings, args: argparse.Namespace) -> None:
    configure_logging(json_lines=settings.resolved_log_format == "json", level=settings.log_level)
    upgrade_database(settings.resolved_database_url)
    print("The database is at the newest migration.")


async def command_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        if args.account:
            account = await services.accounts.get_by_email(args.account)
        else:
            account = await services.accounts.ensure_local_account()
        scopes = [scope for scope in args.scopes.split(",")] if args.scopes else None
        created = await services.keys.create(
            account.id,
            name=args.name,
            mode=KeyMode.TEST if args.test else KeyMode.LIVE,
            scopes=scopes,
        )
    print(created.token)
    print(
        f"Created key {created.row.id} ({created.row.mode}) for {account.email} with scopes "
        f"{created.row.scopes.replace(' ', ', ')}. Store it now: it is not shown again.",
        file=sys.stderr,
    )


async def command_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        account_id = (
            (await services.accounts.get_by_email(args.account)).id if args.account else None
        )
        rows = await services.keys.list(account_id)
    if not rows:
        print("No API keys yet. Create one with `visioncraft keys create --name NAME`.")
        return
    print(f"{'KEY ID':<18} {'MODE':<5} {'STATUS':<8} {'NAME':<24} {'KEY':<34} SCOPES")
    for row in rows:
        described = describe_key(row)
        status = "revoked" if row.revoked_at else "active"
        print(
            f"{row.id:<18} {row.mode:<5} {status:<8} {row.name[:24]:<24} "
            f"{described['redacted']!s:<34} {row.scopes.replace(' ', ',')}"
        )


async def command_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    if args.key_id.startswith("vc_"):
        # Never echo it: this is most likely a whole key, secret included.
        raise CommandError(
            "Pass the key id, not the key itself: the 16 characters after `vc_live_` or "
            "`vc_test_`, as `visioncraft keys list` shows them."
        )
    started = utc_now()
    async with open_services(settings) as services:
        row = await services.keys.revoke(args.key_id)
    if row.revoked_at is not None and row.revoked_at < started:
        print(f"Key {row.id} ({row.name}) was already revoked on {row.revoked_at:%Y-%m-%d}.")
        return
    print(f"Revoked key {row.id} ({row.name}).")


async def command_accounts_create(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        account = await services.accounts.create(
            args.email, role="admin" if args.admin else "user", plan=args.plan
        )
    print(
        f"Created account {account.id} ({account.email}, {account.role}) on the {account.plan} "
        f"plan with {account.allowance_credits} allowance credits until "
        f"{account.cycle_ends_at:%Y-%m-%d %H:%M} UTC."
    )


async def command_accounts_list(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        accounts = await services.accounts.list(limit=10_000)
    print(f"{'ACCOUNT ID':<32} {'ROLE':<6} {'PLAN':<12} {'ALLOWANCE':>9} {'PURCHASED':>9} EMAIL")
    for account in accounts:
        print(
            f"{account.id:<32} {account.role:<6} {account.plan:<12} "
            f"{account.allowance_credits:>9} {account.purchased_credits:>9} {account.email}"
        )


async def command_accounts_set_plan(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        account = await services.accounts.get_by_email(args.email)
        account = await services.accounts.set_plan(account.id, args.plan)
    print(
        f"{account.email} is on the {account.plan} plan, with {account.allowance_credits} "
        f"allowance credits until {account.cycle_ends_at:%Y-%m-%d %H:%M} UTC."
    )


def _read_password() -> str:
    """Ask twice on a terminal; otherwise read one line from standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != password:
        raise CommandError("the two passwords differ; nothing was changed")
    return password


async def command_accounts_set_password(settings: Settings, args: argparse.Namespace) -> None:
    password = _read_password()
    async with open_services(settings) as services:
        account = await services.accounts.get_by_email(args.email)
        await services.accounts.set_password(account.id, password)
    print(f"Set the password of {account.email}.")


async def command_credits_grant(settings: Settings, args: argparse.Namespace) -> None:
    async with open_services(settings) as services:
        account = await services.accounts.get_by_email(args.email)
        await services.credits.grant(account.id, args.credits, reason=args.reason)
        balance = await services.credits.balance(account.id)
    print(
        f"Granted {args.credits} credits to {account.email}: balance {balance.total} "
        f"({balance.allowance} allowance, {balance.purchased} purchased)."
    )


async def command_stripe_sync(settings: Settings, args: argparse.Namespace) -> None:
    # Only the API key is needed: the webhook secret exists once the endpoint is set up, which
    # comes after the prices.
    if settings.stripe_secret_key is None:
        raise CommandError("set VISIONCRAFT_STRIPE_SECRET_KEY to sync the prices to Stripe")
    gateway = StripeGateway(
        settings.stripe_secret_key.get_secret_value(),
        tracer_provider=NoOpTracerProvider(),
        api_base=settings.stripe_api_base,
    )
    try:
        async with open_services(settings) as services:
            currency = settings.currency
            plans = await services.plans.list()
            items = [plan_item(plan, currency) for plan in plans if is_sellable_plan(plan)]
            items += [pack_item(pack, currency) for pack in await services.plans.packs()]
            # Plans that are no longer sold lose their price; subscriptions on it keep running.
            retired = [plan_item(plan, currency) for plan in plans if not is_sellable_plan(plan)]
            outcomes = await sync_catalog(gateway, items, retired)
    finally:
        await gateway.aclose()
    for outcome in outcomes:
        print(outcome.describe())
    changed = sum(outcome.action != "unchanged" for outcome in outcomes)
    print(f"Stripe is in sync: {changed} of {len(outcomes)} prices changed.")


async def command_generate(settings: Settings, args: argparse.Namespace) -> None:
    backend_name = settings.resolved_backend.value
    backend = build_backends(settings)[backend_name]
    request = _validated_request(args, [model.id for model in backend.models()])
    paths = _output_paths(Path(args.output), request.n)
    spec = ImageSpec(
        prompt=compose_prompt(
            request.prompt, style=request.style, negative_prompt=request.negative_prompt
        ),
        model=request.model or backend.models()[0].id,
        aspect_ratio=request.resolved_aspect_ratio(),
        image_size=request.image_size,
        count=request.n,
        seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1),
        style=request.style,
    )
    try:
        task = asyncio.create_task(backend.generate(spec))
        result = await _show_progress(
            task, f"Generating {request.n} image(s) with {backend_name} ({spec.model})"
        )
    finally:
        await backend.aclose()
    for path, image in zip(paths, result.images, strict=True):
        replaced = path.exists()
        try:
            path.write_bytes(image.data)
        except OSError as error:
            raise CommandError(f"Could not write {path}: {error.strerror}.") from None
        note = " (replaced the existing file)" if replaced else ""
        print(f"{path} {image.width}x{image.height} seed {image.seed}{note}")


def _validated_request(args: argparse.Namespace, models: Sequence[str]) -> ImageGenerationCreate:
    """Check the options with the same rules as the API, and the model against the backend's."""
    try:
        request = ImageGenerationCreate(
            prompt=args.prompt,
            n=args.n,
            aspect_ratio=args.aspect_ratio,
            image_size=args.image_size,
            style=args.style,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
        )
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "options"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise CommandError(f"invalid {field}: {message}") from None
    if args.model is not None and args.model not in models:
        raise CommandError(f"unknown model {args.model!r}; use one of {', '.join(models)}")
    return request.model_copy(update={"model": args.model})


def _output_paths(output: Path, count: int) -> list[Path]:
    """Return the files to write, after checking that the folder exists and the name is .png."""
    if output.is_dir():
        raise CommandError(f"{output} is a folder: give a file name such as {output / 'out.png'}.")
    if output.suffix.lower() != ".png":
        raise CommandError(f"{output} does not end in .png: the images are PNG files.")
    if not output.parent.is_dir():
        raise CommandError(f"The folder {output.parent} does not exist: create it first.")
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index + 1}{output.suffix}") for index in range(count)]


async def _show_progress(task: asyncio.Task[T], label: str) -> T:
    """Await `task`, redrawing the elapsed time on stderr twice a second when it is a terminal."""
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    if not interactive:
        print(f"{label} ...", file=sys.stderr)
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if interactive:
            print(
                f"\r{label} ... {time.monotonic() - started:.1f} s",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if interactive:
        print(file=sys.stderr)
    return task.result()


class CommandParser(argparse.ArgumentParser):
    """An argument parser that reports a usage error in one line instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="visioncraft", description="Run and manage VisionCraftAI.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="Start the HTTP service.")
    serve.add_argument(
        "--host", help="Address to listen on (default: VISIONCRAFT_HOST or 127.0.0.1)."
    )
    serve.add_argument(
        "--port", type=_port, help="Port to listen on (default: VISIONCRAFT_PORT or 8000)."
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="Only 1 is supported; scale with replicas."
    )

    commands.add_parser("migrate", help="Apply pending database migrations.")

    keys = commands.add_parser("keys", help="Create, list and revoke API keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="Create a key and print it once.")
    create.add_argument("--name", required=True, help="A label for the key, 1 to 100 characters.")
    create.add_argument(
        "--account", metavar="EMAIL", help="Owner account (default: the local account)."
    )
    create.add_argument(
        "--test", action="store_true", help="A vc_test_ key: demo backend, no credits."
    )
    create.add_argument(
        "--scopes",
        help="Comma-separated scopes (default: images:generate,images:read,keys:manage).",
    )
    listing = key_commands.add_parser("list", help="List keys without their secrets.")
    listing.add_argument("--account", metavar="EMAIL", help="Only this account's keys.")
    revoke = key_commands.add_parser("revoke", help="Revoke a key by its id.")
    revoke.add_argument("key_id", metavar="KEY_ID")

    accounts = commands.add_parser("accounts", help="Create and list accounts, set plans.")
    account_commands = accounts.add_subparsers(
        dest="accounts_command", required=True, metavar="ACTION"
    )
    account_create = account_commands.add_parser("create", help="Create an account.")
    account_create.add_argument("--email", required=True, help="The account's email address.")
    account_create.add_argument("--plan", default="free", help="Plan name (default: free).")
    account_create.add_argument(
        "--admin", action="store_true", help="An admin account, whose keys may carry `admin`."
    )
    account_commands.add_parser("list", help="List accounts with their plans and balances.")
    set_plan = account_commands.add_parser(
        "set-plan", help="Move an account to a plan; a new cycle starts with its allowance."
    )
    set_plan.add_argument("email", metavar="EMAIL")
    set_plan.add_argument("plan", metavar="PLAN")
    set_password = account_commands.add_parser(
        "set-password", help="Set the password for the web pages (asked, or read from stdin)."
    )
    set_password.add_argument("email", metavar="EMAIL")

    credits = commands.add_parser("credits", help="Grant credits.")
    credit_commands = credits.add_subparsers(
        dest="credits_command", required=True, metavar="ACTION"
    )
    grant = credit_commands.add_parser("grant", help="Add credits that never expire.")
    grant.add_argument("email", metavar="EMAIL")
    grant.add_argument("credits", metavar="N", type=_credits, help="Credits to add, 1 or more.")
    grant.add_argument("--reason", required=True, help="Why; kept in the credit ledger.")

    stripe = commands.add_parser("stripe", help="Set up Stripe billing.")
    stripe_commands = stripe.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    stripe_commands.add_parser(
        "sync",
        help="Create or update the Stripe products and prices of the paid plans and credit "
        "packs; safe to run again.",
    )

    generate = commands.add_parser("generate", help="Generate images locally, without the server.")
    generate.add_argument("prompt", metavar="PROMPT")
    generate.add_argument(
        "-o", "--output", default="out.png", help="Output PNG file (default: out.png)."
    )
    generate.add_argument(
        "--aspect-ratio", default="1:1", choices=ASPECT_RATIOS, help="Aspect ratio."
    )
    generate.add_argument("--image-size", default="1K", choices=[size.value for size in ImageSize])
    generate.add_argument("--style", choices=STYLES, help="Style hint added to the prompt.")
    generate.add_argument("--negative-prompt", help="What to leave out of the image.")
    generate.add_argument("--seed", type=_seed, help=f"Seed, 0 to {MAX_SEED}; random when unset.")
    generate.add_argument("--model", help="Model id (default: the backend's default model).")
    generate.add_argument(
        "-n", type=_image_count, default=1, help=f"Number of images, 1 to {MAX_IMAGES_PER_REQUEST}."
    )
    return parser


def _bounded_int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
    return value


def _port(text: str) -> int:
    return _bounded_int(text, 1, 65535)


def _seed(text: str) -> int:
    return _bounded_int(text, 0, MAX_SEED)


def _image_count(text: str) -> int:
    return _bounded_int(text, 1, MAX_IMAGES_PER_REQUEST)


def _credits(text: str) -> int:
    return _bounded_int(text, 1, MAX_GRANT_CREDITS)


ASYNC_COMMANDS = {
    ("keys", "create"): command_keys_create,
    ("keys", "list"): command_keys_list,
    ("keys", "revoke"): command_keys_revoke,
    ("accounts", "create"): command_accounts_create,
    ("accounts", "list"): command_accounts_list,
    ("accounts", "set-plan"): command_accounts_set_plan,
    ("accounts", "set-password"): command_accounts_set_password,
    ("credits", "grant"): command_credits_grant,
    ("stripe", "sync"): command_stripe_sync,
    ("generate", None): command_generate,
}


def describe_settings_error(error: ValidationError) -> str:
    """Name the VISIONCRAFT_ variable behind each invalid setting, with pydantic's reason."""
    problems = []
    for problem in error.errors():
        names = [str(part) for part in problem["loc"]]
        variable = f"VISIONCRAFT_{names[0].upper()}" if names else "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        value = problem.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and names else ""
        problems.append(f"{variable}: {message}{shown}" if names else message)
    return "invalid settings: " + "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        if args.command == "serve":
            command_serve(settings, args)
        elif args.command == "migrate":
            command_migrate(settings, args)
        else:
            handler = ASYNC_COMMANDS[(args.command, getattr(args, f"{args.command}_command", None))]
            asyncio.run(handler(settings, args))
    except (ServiceError, CommandError, DatabaseNotMigratedError) as error:
        print(f"error: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 1
    except ValidationError as error:
        print(f"error: {describe_settings_error(error)}", file=sys.stderr)
        return 2
    except ValueError as error:  # UnsafeSettingsError and other setting problems
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
