"""boto3 sessions and AWS errors turned into messages a user can act on.

Credentials come only from boto3's standard chain (environment, shared
profile, instance role); nothing here reads, prints or stores them.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from waveforms.runtime.errors import UserError


class AwsError(UserError):
    """An AWS call that cannot succeed as configured (credentials, bucket, permissions)."""


def session(region: str | None = None):
    import boto3

    return boto3.session.Session(region_name=region or None)


def require_credentials(sess) -> None:
    """Fail early, before anything is created, when the chain has no credentials."""
    if sess.get_credentials() is None:
        raise AwsError(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "run `aws configure`, or use an instance role"
        )


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Re-raise botocore failures during ``what`` as :class:`AwsError`."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as exc:
        raise AwsError(f"{what}: no AWS credentials found ({exc})") from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise AwsError(f"{what}: {err.get('Code', 'error')}: {err.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise AwsError(f"{what}: {exc}") from exc


def require_bucket(s3, bucket: str) -> None:
    """Raise :class:`AwsError` unless ``bucket`` exists and is reachable."""
    from botocore.exceptions import ClientError

    with aws_errors(f"checking bucket {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise AwsError(
                    f"bucket {bucket!r} does not exist; create it first (aws s3 mb s3://{bucket})"
                ) from exc
            if code in ("403", "AccessDenied", "Forbidden"):
                raise AwsError(f"access denied to bucket {bucket!r} with the current credentials") from exc
            raise
