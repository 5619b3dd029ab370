"""Where a stored secret may go: strict endpoint URLs, per-type vendor hosts, the operator's
allow-list, and a connect-time guard against private and metadata addresses.

Why: an organisation admin could point ``base_url`` at their own server and make the hub send
the stored token there, or at 169.254.169.254 / another local port and use the connection test
as a port scanner. So:

* an endpoint is parsed strictly (:data:`EndpointUrl`): ``http``/``https``, a host, no userinfo,
  no query, no fragment (the adapters append paths; ``?``/``#`` would let a URL pick the path);
* it must be ``https`` to one of the adapter's own vendor hosts (``Adapter.vendor_hosts``), or a
  host the *operator* allowed (``INTEGRATIONS_ALLOWED_HOSTS`` or ``var/operator.toml``, written
  by ``integrations endpoints allow``); an organisation admin can never widen this;
* every connection resolves the host and refuses loopback, private, link-local (metadata),
  multicast, reserved and unspecified addresses unless the operator allowed that host or
  address; the check runs when the socket is opened, so DNS rebinding between the check at
  save time and the request does not get through (:func:`guarded_transport`);
* each secret is bound to the endpoints it was entered for (:func:`binding`): the vault puts the
  binding in the ciphertext's associated data, and changing an endpoint needs the secret again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import httpcore
import httpx
from pydantic import AfterValidator

from integration_hub.settings import get_settings

if TYPE_CHECKING:
    from pydantic import BaseModel

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointRefused(ValueError):
    """An endpoint the hub will not send to; the message says why and who can change it."""


class HostUnresolvable(EndpointRefused):
    """The host does not resolve (now): nothing to connect to, nothing proved either way."""


def _strict_url(value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with https:// (or http:// for a host the operator allowed)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not contain a user name or password")
    if parts.query or text.endswith("?"):
        raise ValueError("must not contain a query (?...)")
    if parts.fragment or "#" in text:
        raise ValueError("must not contain a fragment (#...)")
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise ValueError("must not contain spaces or control characters")
    return text


EndpointUrl = Annotated[str, AfterValidator(_strict_url), "endpoint"]
"""A configuration field that names where requests (and so secrets) go. The marker
``"endpoint"`` in the metadata is what :func:`endpoint_fields` looks for: declared once, on the
config model, like ``SecretStr`` for secrets."""


def endpoint_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, info in model.model_fields.items() if "endpoint" in info.metadata)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def origin(url: str) -> str:
    """``https://www.xledger.net`` (scheme, host and a non-default port)."""
    parts = urlsplit(url)
    host = host_of(url)
    shown = f"[{host}]" if ":" in host else host
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{shown}" + (f":{port}" if port and port != default else "")


def endpoint_value(model: type[BaseModel], settings: dict[str, Any], name: str) -> str:
    """An endpoint field's URL as configured, or its default."""
    value = settings.get(name)
    if value is None:
        value = model.model_fields[name].get_default()
    return "" if value is None else str(value)


def origins(model: type[BaseModel], settings: dict[str, Any]) -> dict[str, str]:
    """Endpoint field -> origin, defaults included (a field left at its default is bound to
    the default's origin)."""
    return {
        name: origin(url) if (url := endpoint_value(model, settings, name)) else ""
        for name in sorted(endpoint_fields(model))
    }


def binding(model: type[BaseModel], settings: dict[str, Any]) -> str | None:
    """What the secrets of a configuration are bound to, e.g.
    ``base_url=https://www.xledger.net``; None for a type without endpoints."""
    found = origins(model, settings)
    return ";".join(f"{name}={value}" for name, value in found.items()) or None


def moved_endpoints(
    model: type[BaseModel], before: dict[str, Any], after: dict[str, Any]
) -> dict[str, tuple[str, str]]:
    """Endpoint fields whose origin changes: field -> (old host, new host)."""
    old, new = origins(model, before), origins(model, after)
    return {
        name: (host_of(old[name]), host_of(new[name])) for name in old if old[name] != new[name]
    }


# -- the operator's allow-list ---------------------------------------------------------------
@dataclass(frozen=True)
class AllowList:
    """Hosts and addresses the operator allowed beyond the vendors' own."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.hosts:
            return True
        address = _literal_address(host)
        return address is not None and self.allows_address(address)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def allow_list() -> AllowList:
    return AllowList.parse(get_settings().allowed_host_entries())


def _literal_address(host: str) -> IPAddress | None:
    """An IP written as the host, in any form a resolver accepts (``2130706433``, ``0x7f.1``)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)  # decimal, hex and short forms
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_endpoint(url: str, vendor_hosts: Iterable[str], what: str) -> None:
    """Refuse ``url`` unless it is https to a vendor host or a host the operator allowed.
    Raises :class:`EndpointRefused` with a message an admin can act on."""
    host = host_of(url)
    allowed = allow_list()
    if allowed.allows_host(host):
        return
    vendors = {h.lower() for h in vendor_hosts}
    if host in vendors:
        if urlsplit(url).scheme != "https":
            raise EndpointRefused(f"{what} must use https:// for {host}")
        return
    known = ", ".join(sorted(vendors)) or "none"
    raise EndpointRefused(
        f"{what} points at {host}, which is not one of the service's own hosts ({known}); "
        "a hub operator can allow another host with `integrations endpoints allow HOST`"
    )


def check_addresses(host: str, port: int, allowed: AllowList | None = None) -> list[str]:
    """Resolve ``host`` and return the addresses that may be connected to; raises
    :class:`EndpointRefused` when none may (a private, loopback, link-local, multicast or
    reserved address the operator did not allow)."""
    allowed = allowed or allow_list()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HostUnresolvable(f"cannot resolve {host}: {exc.strerror or exc}") from None
    usable: list[str] = []
    for *_, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        permitted = _public(address) or allowed.allows_host(host)
        if (permitted or allowed.allows_address(address)) and text not in usable:
            usable.append(text)
    if not usable:
        raise EndpointRefused(
            f"{host} resolves to a private, local or reserved address; the hub does not "
            "connect there unless a hub operator allows it"
        )
    return usable


class _GuardedBackend(httpcore.SyncBackend):
    """Opens sockets only to addresses :func:`check_addresses` allows (TLS still verifies the
    host name: httpcore passes the original host as SNI)."""

    def connect_tcp(  # type: ignore[override]
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = check_addresses(host, port)
        except EndpointRefused as exc:
            # Seen by the adapter as a connection never made: a classified "unreachable",
            # never a probe of what listens there.
            raise httpcore.ConnectError(str(exc)) from None
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last


def guarded_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """An httpx transport whose every connection passes :func:`check_addresses`."""
    transport = httpx.HTTPTransport(**kwargs)
    # httpx exposes no public hook for httpcore's network backend; this is the one place that
    # reaches for it, and tests/test_endpoints.py proves the guard is in force.
    transport._pool._network_backend = _GuardedBackend()
    return transport
