"""How every Kafka client of fcl connects: one place turns the `FCL_KAFKA_SECURITY_PROTOCOL`,
`FCL_KAFKA_SASL_*` and `FCL_KAFKA_SSL_*` settings into the client options, for aiokafka's
producers, consumers and admin client (`client_options`) and for the Faust app
(`faust_credentials`), and one place words a refusal (`refusal`): what the broker refused, in one
line, never with the password in it.

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **client_options(settings))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcl.contract.settings import Settings

TLS_PROTOCOLS = {"SSL", "SASL_SSL"}
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}


class KafkaRefused(Exception):
    """The broker refused fcl's credentials, or fcl refused the broker's certificate: retrying
    cannot help, the process ends (the message is `refusal`'s line)."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the TLS protocols (None otherwise): the brokers' certificates checked
    against `FCL_KAFKA_SSL_CAFILE` (the system's trust store when unset), host names checked, and
    this client's certificate and key for mutual TLS when given."""
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    from aiokafka.helpers import create_ssl_context

    with quiet_kafka_client():  # aiokafka logs each CA it loads, at every client's start
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient`."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None  # the settings refuse a SASL protocol without it
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return options


def faust_credentials(settings: Settings) -> Any:
    """The Faust app's `broker_credentials` (None for PLAINTEXT): the same options as
    `client_options`, in Faust's types."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=ssl_context(settings),
            mechanism=settings.kafka_sasl_mechanism,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


def refusal(settings: Settings, exc: BaseException) -> str | None:
    """One line naming what the broker refused, when `exc` is a refusal of fcl's credentials or
    of the broker's certificate (None for any other error); never the password."""
    from aiokafka.errors import KafkaError

    text = f"{type(exc).__name__}: {exc}"
    where = f"Kafka at {settings.kafka_bootstrap} ({settings.kafka_security_protocol})"
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        trust = f"FCL_KAFKA_SSL_CAFILE {settings.kafka_ssl_cafile}" if settings.kafka_ssl_cafile else "the system CAs"
        return f"{where}: the broker's certificate is not trusted by {trust}: {getattr(exc, 'verify_message', exc)}"
    if isinstance(exc, ssl.SSLError):
        return f"{where}: the TLS handshake failed: {exc.reason or exc}"
    name = type(exc).__name__
    if isinstance(exc, KafkaError) and ("Authentication" in name or "SaslAuthentication" in name):
        return (
            f"{where}: the broker refused user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}): {_without_secret(settings, str(exc))}"
        )
    if isinstance(exc, KafkaError) and "Authorization" in name:
        return f"{where}: user {settings.kafka_sasl_username!r} is not allowed this: {name}"
    return None


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """aiokafka logs each failed bootstrap connection itself; while a client starts, `why_refused`
    says it once, in one line, instead."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quiet.setLevel(level)


async def start_or_refuse(
    settings: Settings, start: Callable[[], Awaitable[Any]], close: Callable[[], Awaitable[Any]]
) -> None:
    """Start a client (`start()`, aiokafka's per-connection log lines silenced); when that fails,
    `close()` it and raise `KafkaRefused` (one line) for a refusal, the failure itself otherwise."""
    try:
        with quiet_kafka_client():
            await start()
    except BaseException as exc:
        await close()
        why = await why_refused(settings, exc) if isinstance(exc, Exception) else None
        if why is not None:
            raise KafkaRefused(why) from None
        raise


async def why_refused(settings: Settings, exc: BaseException, timeout: float = 10.0) -> str | None:
    """`refusal(exc)`, or, when `exc` is aiokafka's "Unable to bootstrap" (which keeps only the
    log line of what each broker answered), the refusal one direct connection to each bootstrap
    server meets; None when nothing was refused (an outage: worth retrying)."""
    direct = refusal(settings, exc)
    if direct is not None:
        return direct
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError

    if not isinstance(exc, KafkaConnectionError):
        return None
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **client_options(settings)),
                timeout,
            )
        except Exception as met:  # noqa: BLE001 - classified, not raised
            why = refusal(settings, met)
            if why is not None:
                return why
            continue
        conn.close()
    return None


def _without_secret(settings: Settings, text: str) -> str:
    if settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value():
        text = text.replace(settings.kafka_sasl_password.get_secret_value(), "***")
    return text
