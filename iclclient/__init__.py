"""A typed Python client for the service's HTTP API, and the ``iclserve`` command line that uses it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iclclient.client import APIError, Client, ClientError, JobFailed, ServiceTimeout, ServiceUnreachable

if TYPE_CHECKING:
    from iclclient.estimator import ICLClassifier as ICLClassifier

__all__ = ["APIError", "Client", "ClientError", "JobFailed", "ServiceTimeout", "ServiceUnreachable"]


def __getattr__(name: str) -> Any:
    # ICLClassifier needs scikit-learn (the `sklearn` extra): imported on first use, never by `import iclclient`.
    # It stays out of __all__, so that `from iclclient import *` works without the extra.
    if name == "ICLClassifier":
        from iclclient.estimator import ICLClassifier

        return ICLClassifier
    raise AttributeError(f"module 'iclclient' has no attribute {name!r}")
