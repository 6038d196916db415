"""A port the supervisor publishes on the host for a bridged container: :class:`Publish`."""

from __future__ import annotations

from ._record import record


@record
class Publish:
    """A published port: the supervisor forwards ``host_ip:host_port`` to the container.

    Only for ``Spec(network="bridge")``. The supervisor itself listens on the
    host side and relays each TCP connection (or UDP datagram) to
    ``container_port`` on the container's address; the proxy ends with the
    container.

    Args:
        host_port: the port the supervisor listens on (1-65535).
        container_port: the port inside the container (1-65535).
        protocol: ``"tcp"`` or ``"udp"``.
        host_ip: the host address to listen on (default loopback only).

    Raises:
        ValueError: a port is out of range, the protocol unknown, or
            ``host_ip`` is not an IP address.
        TypeError: a field has the wrong type.
    """

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in ("host_port", "container_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Publish.{name} must be an int")
            if not 1 <= value <= 65535:
                raise ValueError(f"Publish.{name}: {value} is not a port (1-65535)")
        if not isinstance(self.protocol, str) or self.protocol.lower() not in ("tcp", "udp"):
            raise ValueError(f"Publish.protocol must be 'tcp' or 'udp', not {self.protocol!r}")
        object.__setattr__(self, "protocol", self.protocol.lower())
        if not isinstance(self.host_ip, str):
            raise TypeError("Publish.host_ip must be a str")
        import ipaddress

        try:
            ipaddress.ip_address(self.host_ip)
        except ValueError:
            raise ValueError(f"Publish.host_ip: {self.host_ip!r} is not an IP address") from None

    @classmethod
    def parse(cls, text: str) -> Publish:
        """Parse docker's ``[HOST_IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]``.

        Args:
            text: for example ``"8080:80"``, ``"5353:53/udp"`` or
                ``"127.0.0.2:8080:80"``.

        Returns:
            the :class:`Publish`.

        Raises:
            ValueError: not of that form.
        """
        spec, _, proto = text.partition("/")
        parts = spec.rsplit(":", 2)
        try:
            if len(parts) == 2:
                return cls(int(parts[0]), int(parts[1]), proto or "tcp")
            if len(parts) == 3 and parts[0]:
                return cls(int(parts[1]), int(parts[2]), proto or "tcp", parts[0].strip("[]"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"publish {text!r}: {exc}") from None
        raise ValueError(f"publish {text!r} is not [HOST_IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
