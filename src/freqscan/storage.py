"""Object-store settings, taken from the standard environment and nothing else.

freqscan never reads, stores or passes credentials. Every store library finds its own:

- fsspec / s3fs (listing and reading shards, writing ``hits`` files): botocore's standard chain
  (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and
  ``~/.aws``, instance and container roles) and the endpoint of an S3-compatible store from
  ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), which botocore >= 1.31 honours.
- deltalake (the Delta tables): its object_store reads the same ``AWS_*`` variables itself.

On a Ray cluster each node's workers read shards with that node's environment (an instance
role, or variables set before ``ray start``), exactly as any other AWS client there would.

What this module adds is only what deltalake cannot derive on its own, and never a secret:

- ``AWS_ALLOW_HTTP=true`` when the configured endpoint is ``http://`` (a local MinIO or moto):
  the user chose plain HTTP by naming that endpoint, and object_store refuses it otherwise.
- ``AWS_ENDPOINT_URL`` from ``AWS_ENDPOINT_URL_S3`` when only the latter is set (botocore reads
  the service-specific name, object_store does not).

Commits on S3 need no lock: deltalake (>= 1.0) writes each ``_delta_log`` entry with a
conditional put (``If-None-Match: *``), which AWS S3, MinIO, R2 and moto enforce, so two writers
racing for one version cannot overwrite each other; the loser retries on the next version or
fails. freqscan therefore never sets ``AWS_S3_ALLOW_UNSAFE_RENAME`` (it would only matter to a
store without conditional puts, where it trades safety for availability).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_S3_SCHEMES = ("s3://", "s3a://")


def is_s3(uri: str) -> bool:
    return uri.lower().startswith(_S3_SCHEMES)


def s3_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The custom S3 endpoint the environment names, the way botocore resolves it."""
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def delta_storage_options(uri: str, env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """Options deltalake needs for ``uri`` beyond the environment it reads itself.

    Args:
        uri: A table's location (local path or URL).
        env: The environment (default: ``os.environ``).

    Returns:
        ``None`` where deltalake needs nothing more (local paths, other stores, AWS itself);
        otherwise a few non-secret options. Credentials are never among them.
    """
    env = os.environ if env is None else env
    if not is_s3(uri):
        return None
    options: dict[str, str] = {}
    endpoint = s3_endpoint(env)
    if endpoint and "AWS_ENDPOINT_URL" not in env:
        options["AWS_ENDPOINT_URL"] = endpoint
    if endpoint and endpoint.lower().startswith("http://") and "AWS_ALLOW_HTTP" not in env:
        options["AWS_ALLOW_HTTP"] = "true"
    return options or None


# Where the store is, never who is asking: safe to hand to Ray workers.
_WORKER_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def worker_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's non-secret store settings, for workers started elsewhere to agree with it.

    An in-process Ray's workers inherit the driver's whole environment. Workers on other nodes
    of a cluster have their own; without the driver's endpoint they would read from a different
    store than the one the driver listed. Credentials are not among these: each node takes its
    own from its environment or role.
    """
    env = os.environ if env is None else env
    return {k: env[k] for k in _WORKER_VARS if env.get(k)}
