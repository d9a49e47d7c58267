"""The model registry: every candidate version (adapter copy + metadata + model card), the
`production` / `proxy` / `candidate` aliases, a rollback stack and a history of every move.

`Registry(root)` is the API (the server resolves aliases through it); `cift registry …` the CLI.
"""

from cift.registry.api import Registry
from cift.registry.store import (
    BASE_ID,
    InvalidName,
    NotFound,
    Refused,
    RegistryError,
    VersionInfo,
)

__all__ = [
    "BASE_ID",
    "InvalidName",
    "NotFound",
    "Refused",
    "Registry",
    "RegistryError",
    "VersionInfo",
]
