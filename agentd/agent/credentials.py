"""Credentials for tool providers (bank, airline, restaurant), encrypted at rest, handed over by handle.

``agentd credentials add PROVIDER`` stores a secret; a tool that declares the
provider in its ``credential_scopes`` asks for it at call time through
``ToolContext.credential(provider)``. A tool asking for a provider it did not
declare is refused. Secrets never enter a prompt, a plan, the journal, the
audit log or a log line: nothing in agentd logs them, and the planner only
ever sees provider names.

At rest each secret is a Fernet token (AES-128-CBC + HMAC-SHA256, from
``cryptography``) in ``$AGENTD_HOME/credentials/<provider>.secret``, mode 0600
in a 0700 directory. The key lives in the OS keyring when the ``keyring``
package has a usable backend, else in ``credentials/.key`` (mode 0600): on a
phone or an edge box without a keyring, the file's permissions are the boundary.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from agentd.config import make_private_dirs
from agentd.errors import InvalidArgument, NotFound, PermissionDenied

#: Provider names: what tools declare in ``credential_scopes``.
PROVIDER = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
KEYRING_SERVICE = "agentd"
KEY_FILE = ".key"
SUFFIX = ".secret"


class CredentialStore:
    """Encrypted secrets, one per provider, under ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    # -- the secrets -------------------------------------------------------------------
    def add(self, provider: str, secret: str) -> None:
        """Store (or replace) ``provider``'s secret; written to a temporary file, then renamed."""
        _check(provider)
        if not secret:
            raise InvalidArgument("secret", "is empty")
        make_private_dirs(self.directory)
        token = self._fernet().encrypt(secret.encode("utf-8"))
        target = self.directory / f"{provider}{SUFFIX}"
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, token)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(staging, target)

    def get(self, provider: str) -> str:
        """The decrypted secret; NOT_FOUND if none was added."""
        _check(provider)
        path = self.directory / f"{provider}{SUFFIX}"
        if not path.is_file():
            raise NotFound(f"no credential for {provider!r} (add one with `agentd credentials add {provider}`)")
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet().decrypt(path.read_bytes()).decode("utf-8")
        except InvalidToken:
            raise PermissionDenied(f"the credential for {provider!r} does not decrypt with this store's key") from None

    def remove(self, provider: str) -> bool:
        _check(provider)
        path = self.directory / f"{provider}{SUFFIX}"
        if not path.exists():
            return False
        path.unlink()
        return True

    def providers(self) -> list[str]:
        """Providers with a stored secret (names only)."""
        if not self.directory.is_dir():
            return []
        return sorted(path.name.removesuffix(SUFFIX) for path in self.directory.glob(f"*{SUFFIX}"))

    def for_tool(self, tool: str, scopes: tuple[str, ...]):
        """The ``ToolContext.credential`` callable for a tool: only the providers it declared."""

        def credential(provider: str) -> str:
            if provider not in scopes:
                raise PermissionDenied(f"tool {tool!r} did not declare credential scope {provider!r}")
            return self.get(provider)

        return credential

    # -- the key -----------------------------------------------------------------------
    def _fernet(self):
        from cryptography.fernet import Fernet

        return Fernet(self._key())

    def _key(self) -> bytes:
        from cryptography.fernet import Fernet

        keyring = _keyring()
        if keyring is not None:
            stored = keyring.get_password(KEYRING_SERVICE, str(self.directory))
            if stored is None:
                stored = Fernet.generate_key().decode()
                keyring.set_password(KEYRING_SERVICE, str(self.directory), stored)
            return stored.encode()
        make_private_dirs(self.directory)
        path = self.directory / KEY_FILE
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                raise PermissionDenied(f"{path}: the credential key is readable by others; chmod 600 it") from None
            return path.read_bytes()
        key = Fernet.generate_key()
        try:
            os.write(descriptor, key)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return key


def _check(provider: str) -> None:
    if not PROVIDER.fullmatch(provider or ""):
        raise InvalidArgument("provider", f"must match {PROVIDER.pattern} (got {provider!r})")


def _keyring():
    """The ``keyring`` module when it has a real backend, else None (no keyring on this device)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or type(backend).__module__.startswith("keyring.backends.null"):
        return None
    return keyring
