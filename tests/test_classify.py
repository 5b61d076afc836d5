from __future__ import annotations

import botocore.exceptions as bex
import pytest
from botocore.exceptions import ClientError

from s3_multipart_upload.s3 import Kind, classify, is_throttling


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "UploadPart")


@pytest.mark.parametrize(("exc", "kind"), [
    (client_error("SlowDown", 503), Kind.TRANSIENT),
    (client_error("InternalError", 500), Kind.TRANSIENT),
    (client_error("RequestTimeout", 400), Kind.TRANSIENT),
    (client_error("BadDigest", 400), Kind.TRANSIENT),
    (client_error("", 502), Kind.TRANSIENT),
    (bex.ReadTimeoutError(endpoint_url="http://x"), Kind.TRANSIENT),
    (bex.ConnectTimeoutError(endpoint_url="http://x"), Kind.TRANSIENT),
    (bex.ConnectionClosedError(endpoint_url="http://x"), Kind.TRANSIENT),
    (bex.EndpointConnectionError(endpoint_url="http://x"), Kind.TRANSIENT),
    (ConnectionResetError(104, "reset"), Kind.TRANSIENT),
    (client_error("ExpiredToken", 400), Kind.CREDENTIALS),
    (client_error("ExpiredTokenException", 400), Kind.CREDENTIALS),
    (client_error("TokenRefreshRequired", 400), Kind.CREDENTIALS),
    (client_error("RequestExpired", 400), Kind.CREDENTIALS),
    (client_error("InvalidToken", 400), Kind.CREDENTIALS),
    (bex.TokenRetrievalError(provider="sso", error_msg="expired"), Kind.CREDENTIALS),
    (client_error("NoSuchUpload", 404), Kind.GONE),
    (client_error("AccessDenied", 403), Kind.REFUSED),
    (client_error("NoSuchBucket", 404), Kind.REFUSED),
    (client_error("InvalidAccessKeyId", 403), Kind.REFUSED),
    (client_error("SignatureDoesNotMatch", 403), Kind.REFUSED),
    (bex.NoCredentialsError(), Kind.REFUSED),
    (ValueError("bug"), Kind.FATAL),
])
def test_classify(exc: BaseException, kind: Kind) -> None:
    assert classify(exc) is kind


def test_throttling_is_slowdown_503_and_429_only() -> None:
    assert is_throttling(client_error("SlowDown", 503))
    assert is_throttling(client_error("", 429))
    assert not is_throttling(client_error("InternalError", 500))
