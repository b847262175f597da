"""A development PKI: one CA, a server certificate for Envoy, client certificates for SMOs.

Generated with the `cryptography` package so a fresh machine needs no openssl CLI. The files
are created once and reused while they stay valid, so a developer's browser or SMO simulator
keeps trusting the same CA across `make run`s. Production certificates come from the
operator's own CA (cert-manager, a Kubernetes Secret); nothing here is used there.

    python -m devstack.pki [--dir .netweave/pki]                  create or reuse the PKI
    python -m devstack.pki [--dir ...] issue-client NAME [--days N] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIR = Path(".netweave/pki")
DEV_CLIENT_NAME = "netweave-dev-client"
# Client identities are SPIFFE-style URIs: the XFCC header Envoy forwards to the core
# carries `URI=...`, which is what the core will authorize on (roles per client).
CLIENT_URI_PREFIX = "spiffe://netweave.local/client/"

CA_DAYS = 3650
LEAF_DAYS = 365
# A certificate that expires within this margin is replaced rather than reused, so a
# long-running dev stack does not start failing handshakes halfway through a day.
RENEW_MARGIN = dt.timedelta(days=1)
# Backdate notBefore a little: a peer whose clock is slightly behind would otherwise
# reject a certificate minted a second ago.
CLOCK_SKEW = dt.timedelta(minutes=5)

_ORGANIZATION = "netweave development"
_CLIENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    """Paths of the development PKI's files (all PEM)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def at(cls, directory: Path) -> DevPki:
        """The file layout under `directory` (touches nothing on disk)."""
        return cls(
            directory=directory,
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            client_cert=directory / "client.crt",
            client_key=directory / "client.key",
        )

    @property
    def server(self) -> IssuedCertificate:
        return IssuedCertificate(self.server_cert, self.server_key)

    @property
    def client(self) -> IssuedCertificate:
        return IssuedCertificate(self.client_cert, self.client_key)

    @property
    def ca(self) -> IssuedCertificate:
        return IssuedCertificate(self.ca_cert, self.ca_key)


def ensure_dev_pki(directory: Path = DEFAULT_DIR) -> DevPki:
    """Create the development PKI under `directory`, or reuse what is there and valid.

    A valid CA is kept even if a leaf certificate must be reissued, so clients that
    already trust the CA keep working. A missing, expired or foreign CA replaces everything.
    """
    pki = DevPki.at(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        now = _now()
        ca = _load_valid_ca_pair(pki.ca, now)
        if ca is None:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _build_ca(ca_key, now)
            _write_pair(pki.ca_cert, ca_cert, pki.ca_key, ca_key)
            ca = (ca_cert, ca_key)
        if not _leaf_is_valid(pki.server, ca[0], now):
            _issue(
                ca,
                pki.server,
                common_name="localhost",
                san=[
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ],
                usage=ExtendedKeyUsageOID.SERVER_AUTH,
                not_before=now - CLOCK_SKEW,
                not_after=now + dt.timedelta(days=LEAF_DAYS),
            )
        if not _leaf_is_valid(pki.client, ca[0], now):
            _issue_client(
                ca,
                pki.client,
                DEV_CLIENT_NAME,
                now - CLOCK_SKEW,
                now + dt.timedelta(days=LEAF_DAYS),
            )
    return pki


# The core's and the edge's identities on the channel between them (the edge listener).
CORE_URI = "spiffe://netweave.local/core"
EDGE_URI = "spiffe://netweave.local/edge"


@dataclass(frozen=True)
class InternalPki:
    """The CA of the channel between Envoy and the core, apart from the dev CA that signs
    SMO certificates: a client certificate of the dev CA must never pass for the edge.
    `core` serves the core's edge listener; `edge` is Envoy's own client certificate."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    core: IssuedCertificate
    edge: IssuedCertificate

    @classmethod
    def at(cls, directory: Path) -> InternalPki:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            core=IssuedCertificate(directory / "core.crt", directory / "core.key"),
            edge=IssuedCertificate(directory / "edge.crt", directory / "edge.key"),
        )

    @property
    def ca(self) -> IssuedCertificate:
        return IssuedCertificate(self.ca_cert, self.ca_key)

    def issue(self, name: str, uri: str, *, server: bool = False) -> IssuedCertificate:
        """Another certificate of this CA (tests: an edge impostor with the wrong SAN)."""
        target = IssuedCertificate(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        now = _now()
        _issue(
            _load_ca_pair(self.ca),
            target,
            common_name=name,
            san=_internal_san(uri, server),
            usage=ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH,
            not_before=now - CLOCK_SKEW,
            not_after=now + dt.timedelta(days=LEAF_DAYS),
        )
        return target


def ensure_internal_pki(directory: Path) -> InternalPki:
    """Create (or reuse while valid) the internal CA and the core's and edge's certificates.
    Private keys are 0600 in a 0700 directory: no other local user can read them."""
    pki = InternalPki.at(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    with _locked(directory):
        now = _now()
        ca = _load_valid_ca_pair(pki.ca, now)
        if ca is None:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _build_ca(ca_key, now, "netweave internal CA")
            _write_pair(pki.ca_cert, ca_cert, pki.ca_key, ca_key)
            ca = (ca_cert, ca_key)
        for target, name, uri, server in (
            (pki.core, "netweave-core", CORE_URI, True),
            (pki.edge, "netweave-edge", EDGE_URI, False),
        ):
            if not _leaf_is_valid(target, ca[0], now):
                _issue(
                    ca,
                    target,
                    common_name=name,
                    san=_internal_san(uri, server),
                    usage=(
                        ExtendedKeyUsageOID.SERVER_AUTH
                        if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH
                    ),
                    not_before=now - CLOCK_SKEW,
                    not_after=now + dt.timedelta(days=LEAF_DAYS),
                )
    return pki


def _internal_san(uri: str, server: bool) -> list[x509.GeneralName]:
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    if server:
        san += [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    return san


def issue_client_certificate(
    pki_dir: Path,
    name: str,
    out_dir: Path,
    *,
    days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCertificate:
    """Mint a client certificate for `name`, signed by the dev CA, as `out_dir/NAME.crt|.key`.

    The certificate has CN=`name`, the URI SAN `spiffe://netweave.local/client/NAME` and the
    clientAuth EKU. `not_before`/`not_after` (timezone-aware) override `days`, so tests can
    mint expired or not-yet-valid certificates. The CA is created if missing.
    """
    if not _CLIENT_NAME_PATTERN.match(name):
        raise ValueError(
            f"client name {name!r} must be 1-63 characters of letters, digits, '.', '_' or '-'"
        )
    now = _now()
    start = not_before if not_before is not None else now - CLOCK_SKEW
    end = not_after if not_after is not None else now + dt.timedelta(days=days)
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    pki = ensure_dev_pki(pki_dir)
    ca = _load_ca_pair(pki.ca)
    out_dir.mkdir(parents=True, exist_ok=True)
    issued = IssuedCertificate(out_dir / f"{name}.crt", out_dir / f"{name}.key")
    _issue_client(ca, issued, name, start, end)
    return issued


def issue_crafted_certificate(
    ca: IssuedCertificate,
    target: IssuedCertificate,
    *,
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
) -> IssuedCertificate:
    """A client certificate of `ca` with exactly the subject and SANs given, however odd
    (tests: SANs with commas, subjects with escaped separators, several URIs)."""
    now = _now()
    _issue(
        _load_ca_pair(ca),
        target,
        common_name="",
        subject=subject,
        san=san,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before=now - CLOCK_SKEW,
        not_after=now + dt.timedelta(days=1) + RENEW_MARGIN,
    )
    return target


@dataclass(frozen=True)
class RenewedCertificate:
    """A renewal's PEM bytes (not written anywhere yet) and its serial number."""

    cert_pem: bytes
    key_pem: bytes
    serial: int


def renew(
    target: IssuedCertificate, ca: IssuedCertificate, *, days: int = LEAF_DAYS
) -> RenewedCertificate:
    """What cert-manager's renewal of `target` gives: a new key and a new serial for the
    subject, SANs and extended key usage of `target`'s certificate, signed by `ca`, valid
    from now for `days`. Nothing is written (see `reissue` and `publish_secret`)."""
    current = x509.load_pem_x509_certificate(target.cert.read_bytes())
    usage = current.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_leaf(
        _load_ca_pair(ca),
        key,
        subject=current.subject,
        san=list(san),
        usage=next(iter(usage)),
        not_before=now - CLOCK_SKEW,
        not_after=now + dt.timedelta(days=days),
    )
    return RenewedCertificate(
        cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert.serial_number
    )


def reissue(target: IssuedCertificate, ca: IssuedCertificate, *, days: int = LEAF_DAYS) -> int:
    """Renew `target` (see `renew`) in place: the key, then the certificate, each written
    aside and renamed over the old file (as `mv` would). Returns the new serial."""
    renewed = renew(target, ca, days=days)
    write_atomically(target.key, renewed.key_pem, mode=0o600)
    write_atomically(target.cert, renewed.cert_pem, mode=0o644)
    return renewed.serial


def publish_secret(directory: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (name -> content) into `directory` as kubelet updates a mounted
    Secret (its AtomicWriter): a new `..<timestamp>` directory with the files, a `..data`
    symlink to it swapped in by one rename, and `name -> ..data/name` symlinks (created
    once). Every file changes at the same instant; the old data directory is removed.
    Returns the new data directory. A regular file of a published name is replaced by the
    symlink, once."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    data = directory / f"..{stamp}"
    data.mkdir(mode=0o755)
    for name, content in files.items():
        write_atomically(data / name, content, mode=0o600 if name.endswith(".key") else 0o644)
    link = directory / "..data"
    previous = os.readlink(link) if link.is_symlink() else None
    swap = directory / "..data_tmp"
    swap.unlink(missing_ok=True)
    swap.symlink_to(data.name)
    swap.replace(link)
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            staged = directory / f".{name}.link"
            staged.unlink(missing_ok=True)
            staged.symlink_to(f"..data/{name}")
            staged.replace(visible)
    if previous is not None and previous != data.name:
        old = directory / previous
        for leftover in old.iterdir():
            leftover.unlink()
        old.rmdir()
    return data


def client_uri(name: str) -> str:
    """The URI SAN (and so the XFCC `URI=` identity) of client `name`."""
    return CLIENT_URI_PREFIX + name


# --- implementation ------------------------------------------------------------------

_CaPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _now() -> dt.datetime:
    # Whole seconds: X.509 times have no fractions, and comparing against what was
    # written must not depend on sub-second rounding.
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise creation between processes (a test session and `make run` at once)."""
    with (directory / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _build_ca(
    key: ec.EllipticCurvePrivateKey, now: dt.datetime, common_name: str = "netweave development CA"
) -> x509.Certificate:
    name = _name(common_name)
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue_client(
    ca: _CaPair,
    target: IssuedCertificate,
    name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> None:
    _issue(
        ca,
        target,
        common_name=name,
        san=[x509.UniformResourceIdentifier(client_uri(name))],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before=not_before,
        not_after=not_after,
    )


def _issue(
    ca: _CaPair,
    target: IssuedCertificate,
    *,
    common_name: str,
    san: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_before: dt.datetime,
    not_after: dt.datetime,
    subject: x509.Name | None = None,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_leaf(
        ca,
        key,
        subject=subject if subject is not None else _name(common_name),
        san=san,
        usage=usage,
        not_before=not_before,
        not_after=not_after,
    )
    _write_pair(target.cert, cert, target.key, key)


def _build_leaf(
    ca: _CaPair,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    ca_cert, ca_key = ca
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDHE-ECDSA handshakes need digitalSignature only.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # Critical when the subject would be empty is the RFC rule; ours has a CN, so not.
        .add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(
    cert_path: Path,
    cert: x509.Certificate,
    key_path: Path,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    # Key first: a crash between the two writes leaves a cert/key mismatch, which
    # the validity check detects and repairs, never a new cert with an old key in use.
    write_atomically(key_path, _key_pem(key), mode=0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        # The umask may have narrowed or (for 0o644) the file may pre-exist: be explicit.
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _read_pair(
    target: IssuedCertificate,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(target.cert.read_bytes())
        key = serialization.load_pem_private_key(target.key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key():
        return None
    return cert, key


def _load_ca_pair(ca: IssuedCertificate) -> _CaPair:
    pair = _read_pair(ca)
    if pair is None:
        raise RuntimeError(f"no usable CA in {ca.cert.parent}")
    return pair


def _load_valid_ca_pair(ca: IssuedCertificate, now: dt.datetime) -> _CaPair | None:
    pair = _read_pair(ca)
    if pair is None or not _in_validity(pair[0], now):
        return None
    constraints = pair[0].extensions.get_extension_for_class(x509.BasicConstraints)
    return pair if constraints.value.ca else None


def _leaf_is_valid(target: IssuedCertificate, ca_cert: x509.Certificate, now: dt.datetime) -> bool:
    pair = _read_pair(target)
    if pair is None or not _in_validity(pair[0], now):
        return False
    try:
        pair[0].verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _in_validity(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + RENEW_MARGIN < cert.not_valid_after_utc


# --- command line -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.pki", description="Create or reuse the netweave dev PKI."
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="PKI directory")
    commands = parser.add_subparsers(dest="command")
    issue = commands.add_parser("issue-client", help="mint another client certificate")
    issue.add_argument("name", help="client name: the CN and the last segment of the URI SAN")
    issue.add_argument("--days", type=int, default=LEAF_DAYS, help="validity in days")
    issue.add_argument("--out", type=Path, help="output directory (default: DIR/clients)")
    args = parser.parse_args(argv)

    pki = ensure_dev_pki(args.dir)
    if args.command == "issue-client":
        issued = issue_client_certificate(
            pki.directory, args.name, args.out or pki.directory / "clients", days=args.days
        )
        print(f"client {args.name} ({client_uri(args.name)}):")
        print(f"  cert {issued.cert}\n  key  {issued.key}")
    else:
        print(
            f"dev PKI in {pki.directory}:\n  CA     {pki.ca_cert}\n"
            f"  server {pki.server_cert} (localhost, 127.0.0.1, ::1)\n"
            f"  client {pki.client_cert} ({client_uri(DEV_CLIENT_NAME)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
