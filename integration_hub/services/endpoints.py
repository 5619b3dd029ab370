"""The operator's allow-list of hosts the hub may send to besides each service's own.

Only someone at the hub's own command line (a ``local`` actor) changes it: an organisation
admin can never widen where the hub sends their (or anyone's) secrets. The list lives in
``var/operator.toml``, read by every later command, plus ``INTEGRATIONS_ALLOWED_HOSTS``.
"""

from __future__ import annotations

import ipaddress

from integration_hub.db import hub_session
from integration_hub.services.configuration import Actor, audit
from integration_hub.services.errors import Forbidden, InvalidInput
from integration_hub.settings import get_settings, write_operator_file

_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _normalise(entry: str) -> str:
    text = entry.strip().lower().rstrip(".")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    else:
        single = network.num_addresses == 1
        return str(network.network_address) if single else str(network)
    if not text or not set(text) <= _HOST_CHARS or ".." in text or text.startswith("-"):
        raise InvalidInput(
            f"{entry!r} is neither a host name, an IP address nor a network like 10.0.0.0/8"
        )
    return text


def _require_local(actor: Actor) -> None:
    if not actor.is_local:
        raise Forbidden("only a hub operator at the hub's command line can change this")


def stored_hosts() -> list[str]:
    return list(get_settings().stored_allowed_hosts)


def allowed_hosts() -> tuple[list[str], list[str]]:
    """(stored in var/operator.toml, from INTEGRATIONS_ALLOWED_HOSTS)."""
    return stored_hosts(), get_settings().env_allowed_hosts


def allow(entry: str, actor: Actor) -> list[str]:
    _require_local(actor)
    value = _normalise(entry)
    hosts = stored_hosts()
    if value not in hosts:
        hosts.append(value)
        write_operator_file(get_settings().operator_file, hosts)
        with hub_session() as session:
            audit(session, actor, "endpoints.allowed", host=value)
    return hosts


def disallow(entry: str, actor: Actor) -> list[str]:
    _require_local(actor)
    value = _normalise(entry)
    hosts = stored_hosts()
    if value in hosts:
        hosts.remove(value)
        write_operator_file(get_settings().operator_file, hosts)
        with hub_session() as session:
            audit(session, actor, "endpoints.disallowed", host=value)
    return hosts
