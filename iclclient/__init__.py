"""A typed Python client for the service's HTTP API, and the ``iclserve`` command line that uses it."""

from iclclient.client import APIError, Client, ClientError, JobFailed, ServiceTimeout, ServiceUnreachable

__all__ = ["APIError", "Client", "ClientError", "JobFailed", "ServiceTimeout", "ServiceUnreachable"]
