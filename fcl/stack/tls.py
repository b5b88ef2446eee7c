"""A certificate authority of the local stack's own, with openssl (in Debian's base): the CA, and
certificates it signs for 127.0.0.1 and localhost. Private keys are written mode 0600 from the
moment they exist (the commands run under umask 077), never wider and then narrowed."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fcl.stack.common import StackError, write_private

DAYS = "825"


@dataclass(frozen=True)
class Certificate:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (PKCS#8, unencrypted, mode 0600)

    def bundle(self, path: Path) -> Path:
        """Key and certificate in one PEM file (mode 0600): Kafka's PEM keystore."""
        write_private(path, self.key.read_text() + self.cert.read_text())
        return path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("openssl is needed for a secured stack (Debian: apt-get install openssl)")
    done = subprocess.run(
        ["sh", "-c", 'umask 077 && exec "$@"', "openssl", openssl, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {(done.stderr or done.stdout).strip()[-1000:]}")


def make_ca(folder: Path, name: str = "fcl local CA") -> Certificate:
    """A new CA in `folder` (ca.pem, ca.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", f"/CN={name} {secrets.token_hex(4)}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return Certificate(folder / "ca.pem", folder / "ca.key")


def issue(ca: Certificate, folder: Path, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificate:
    """A certificate signed by `ca` for `hosts` (server and client use), as name.pem and name.key."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={hosts[0]}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert.resolve()), "-CAkey", str(ca.key.resolve()),
        "-CAcreateserial", "-days", DAYS, "-extfile", extensions.name, "-out", f"{name}.pem",
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.csr").unlink(missing_ok=True)
    return Certificate(folder / f"{name}.pem", folder / f"{name}.key")
