"""A small authoritative DNS server for tests, built on dnspython.

It serves zones given as zone-file text on 127.0.0.1 (UDP and TCP on one
ephemeral port), answers like an authoritative server (AA set; NXDOMAIN and
NODATA with the zone's SOA; REFUSED outside its zones, never recursing), counts
every query it receives and the most it was answering at once, can answer every
query late (``delay_seconds``, like a distant resolver), and can misbehave on purpose
for one name: never answer (the client times out), answer SERVFAIL, or answer late::

    with DNSServer({"test.": "acme MX 10 aspmx.l.google.com."}) as server:
        resolver = server.resolver(lifetime=1.0)
        resolver.resolve("acme.test", "MX")
        assert server.count("acme.test", "MX") == 1
        server.drop("slow.test")          # queries for slow.test now time out

Zone text may leave out ``$TTL`` (60 is assumed) and the origin's SOA and NS
records (placeholders are added), so a test writes only the records it cares
about. Wildcards (``*.zen.test``) and CNAME chains inside the served zones work.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.node
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.zone

__all__ = ["DNSServer", "Query", "txt"]

_DEFAULT_TTL = 60
_MAX_CNAME_CHAIN = 8


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server received."""

    name: str  # lower case, no trailing dot
    rdtype: str  # "MX", "TXT", ...
    transport: str  # "udp" or "tcp"


class DNSServer:
    """An authoritative DNS server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        zones: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        delay_seconds: float = 0.0,
    ) -> None:
        self.host = host
        self.delay_seconds = delay_seconds  # every answer waits this long (per-name faults win)
        self._in_flight = 0
        self._max_in_flight = 0
        self._gate = threading.Event()  # cleared: every answer waits for resume()
        self._gate.set()
        self._zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self._faults: dict[dns.name.Name, tuple[str, float]] = {}
        self._queries: list[Query] = []
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self._port = 0
        for origin, text in (zones or {}).items():
            self.set_zone(origin, text)

    # -- zones and faults -------------------------------------------------

    def set_zone(self, origin: str, text: str) -> None:
        """Serve ``text`` as the zone at ``origin``, replacing any zone there."""
        name = dns.name.from_text(origin)
        zone = _parse_zone(name, text)
        with self._lock:
            self._zones[name] = zone

    def remove_zone(self, origin: str) -> None:
        """Stop serving the zone at ``origin`` (its names become REFUSED)."""
        with self._lock:
            self._zones.pop(dns.name.from_text(origin), None)

    def drop(self, name: str) -> None:
        """Never answer queries for ``name``: the client times out."""
        self._set_fault(name, "drop")

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL to queries for ``name``."""
        self._set_fault(name, "servfail")

    def delay(self, name: str, seconds: float) -> None:
        """Answer queries for ``name`` normally, but only after ``seconds``."""
        self._set_fault(name, "delay", seconds)

    def pause(self) -> None:
        """Hold every answer (the queries are received and counted) until :meth:`resume`."""
        self._gate.clear()

    def resume(self) -> None:
        """Send the held answers and answer normally again."""
        self._gate.set()

    def clear_faults(self) -> None:
        """Answer every name normally again."""
        with self._lock:
            self._faults.clear()

    def _set_fault(self, name: str, kind: str, seconds: float = 0.0) -> None:
        with self._lock:
            self._faults[dns.name.from_text(name)] = (kind, seconds)

    # -- what was asked ---------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        """Every query received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._queries)

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many queries were received, for ``name`` and/or ``rdtype`` if given."""
        want = None if name is None else name.rstrip(".").lower()
        kind = None if rdtype is None else rdtype.upper()
        return sum(
            1
            for q in self.queries
            if (want is None or q.name == want) and (kind is None or q.rdtype == kind)
        )

    def reset_queries(self) -> None:
        """Forget the queries received so far (and the in-flight high-water mark)."""
        with self._lock:
            self._queries.clear()
            self._max_in_flight = self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most queries this server was answering at the same moment."""
        with self._lock:
            return self._max_in_flight

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (UDP and TCP); 0 until started."""
        return self._port

    def resolver(self, *, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A stub resolver that asks this server only, never the system's (call after start)."""
        if not self._port:
            raise RuntimeError("DNSServer.resolver() before start(): no port yet")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(self.host, self._port)]
        resolver.lifetime = lifetime
        resolver.timeout = lifetime
        return resolver

    def start(self) -> int:
        """Listen on an ephemeral port (the same for UDP and TCP) and return it."""
        if self._servers:
            return self._port
        udp, tcp = self._bind()
        self._servers = [udp, tcp]
        self._port = udp.server_address[1]
        for server in self._servers:
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"dns-test-{type(server).__name__}",
                daemon=True,
            ).start()
        return self._port

    def stop(self) -> None:
        """Stop listening; idempotent."""
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=server.shutdown) for server in servers]
        for stopper in stoppers:  # both loops notice within one poll interval
            stopper.start()
        for stopper, server in zip(stoppers, servers, strict=True):
            stopper.join()
            server.server_close()

    def __enter__(self) -> DNSServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> tuple[_UDPServer, _TCPServer]:
        for _ in range(20):  # the TCP port may be taken by someone else: try another
            udp = _UDPServer((self.host, 0), _UDPHandler, self)
            try:
                tcp = _TCPServer((self.host, udp.server_address[1]), _TCPHandler, self)
            except OSError:
                udp.server_close()
                continue
            return udp, tcp
        raise OSError("no port free for both UDP and TCP on " + self.host)

    # -- answering ----------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        """The response to one query in wire format, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: a real server drops it too
        response = dns.message.make_response(query)
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname = question.name.canonicalize()
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return self._answer(response, qname, question.rdtype, transport)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: int,
        transport: str,
    ) -> bytes | None:
        with self._lock:
            self._queries.append(
                Query(qname.to_text(omit_final_dot=True), dns.rdatatype.to_text(rdtype), transport)
            )
            fault = self._faults.get(qname)
            zones = dict(self._zones)
        delay = self.delay_seconds
        if fault is not None:
            kind, delay = fault
            if kind == "drop":
                return None
            if kind == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
        self._gate.wait()
        if delay > 0:
            time.sleep(delay)
        _fill(response, qname, rdtype, zones)
        return response.to_wire()


def txt(value: str) -> str:
    """``value`` as TXT rdata in zone-file text: quoted strings of at most 255 bytes
    (RFC 1035 §3.3.14; a 2048-bit DKIM key needs two), quotes and backslashes escaped."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _parse_zone(name: dns.name.Name, text: str) -> dns.zone.Zone:
    """Parse zone text, adding a default TTL and placeholder SOA/NS at the origin."""
    zone = dns.zone.from_text(
        f"$TTL {_DEFAULT_TTL}\n{text}", origin=name, relativize=False, check_origin=False
    )
    apex = zone.find_node(name, create=True)
    defaults = {
        dns.rdatatype.SOA: f"ns1.{name} hostmaster.{name} 1 3600 600 86400 {_DEFAULT_TTL}",
        dns.rdatatype.NS: f"ns1.{name}",
    }
    for rdtype, rdata in defaults.items():
        if apex.get_rdataset(dns.rdataclass.IN, rdtype) is None:
            rdataset = apex.find_rdataset(dns.rdataclass.IN, rdtype, create=True)
            rdataset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata), _DEFAULT_TTL)
    return zone


class _Zone(NamedTuple):
    origin: dns.name.Name
    zone: dns.zone.Zone


def _zone_for(name: dns.name.Name, zones: Mapping[dns.name.Name, dns.zone.Zone]) -> _Zone | None:
    """The zone with the longest origin that contains ``name``."""
    best: _Zone | None = None
    for origin, zone in zones.items():
        if name.is_subdomain(origin) and (best is None or origin.is_subdomain(best.origin)):
            best = _Zone(origin, zone)
    return best


def _exists(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
    """Whether ``name`` owns records or is an empty non-terminal (RFC 8020)."""
    return zone.get_node(name) is not None or any(n.is_subdomain(name) for n in zone.nodes)


def _lookup(where: _Zone, name: dns.name.Name) -> tuple[bool, dns.node.Node | None]:
    """``(name exists, node answering for it)``, synthesising from a wildcard (RFC 4592)."""
    node = where.zone.get_node(name)
    if node is not None:
        return True, node
    if _exists(where.zone, name):
        return True, None
    encloser = name.parent()
    while encloser.is_subdomain(where.origin):
        if _exists(where.zone, encloser):
            wildcard = where.zone.get_node(dns.name.Name((b"*", *encloser.labels)))
            return wildcard is not None, wildcard
        encloser = encloser.parent()
    return False, None


def _fill(
    response: dns.message.Message,
    qname: dns.name.Name,
    rdtype: int,
    zones: Mapping[dns.name.Name, dns.zone.Zone],
) -> None:
    """Put the authoritative answer for ``qname``/``rdtype`` into ``response``."""
    name = qname
    for _ in range(_MAX_CNAME_CHAIN):
        where = _zone_for(name, zones)
        if where is None:
            if name == qname:  # not ours: refuse, never recurse
                response.set_rcode(dns.rcode.REFUSED)
            return  # a CNAME leading out of our zones: the client follows it
        response.flags |= dns.flags.AA
        exists, node = _lookup(where, name)
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
            _add_soa(response, where)
            return
        found = _rdatasets(node, rdtype)
        if found:
            for rdataset in found:
                response.answer.append(
                    dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
                )
            return
        cname = None if node is None else node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:  # NODATA
            _add_soa(response, where)
            return
        response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
        name = next(iter(cname)).target
    response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop


def _rdatasets(node: dns.node.Node | None, rdtype: int) -> list[dns.rdataset.Rdataset]:
    if node is None:
        return []
    if rdtype == dns.rdatatype.ANY:
        return list(node.rdatasets)
    rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype))
    return [] if rdataset is None else [rdataset]


def _add_soa(response: dns.message.Message, where: _Zone) -> None:
    soa = where.zone.find_rdataset(where.origin, dns.rdatatype.SOA)
    response.authority.append(dns.rrset.from_rdata_list(where.origin, soa.ttl, list(soa)))


# -- transports ------------------------------------------------------------


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, dns_server: DNSServer) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, dns_server: DNSServer) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _UDPHandler(socketserver.BaseRequestHandler):
    server: _UDPServer

    def handle(self) -> None:
        data, sock = self.request
        out = self.server.dns_server.answer(data, "udp")
        if out is None:
            return
        limit = _udp_limit(data)
        if len(out) > limit:  # too big for UDP: truncate, the client retries over TCP
            message = dns.message.from_wire(out)
            message.answer.clear()
            message.authority.clear()
            message.additional.clear()
            message.flags |= dns.flags.TC
            out = message.to_wire()
        sock.sendto(out, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        stream = sock.makefile("rb")
        try:
            while len(header := stream.read(2)) == 2:
                out = self.server.dns_server.answer(
                    stream.read(struct.unpack("!H", header)[0]), "tcp"
                )
                if out is not None:
                    sock.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass  # the client went away or idled out
        finally:
            stream.close()


def _udp_limit(query_wire: bytes) -> int:
    """The largest UDP response the client accepts (RFC 6891 §6.2.5)."""
    try:
        query = dns.message.from_wire(query_wire)
    except dns.exception.DNSException:
        return 512
    return 512 if query.edns < 0 else max(query.payload, 512)
