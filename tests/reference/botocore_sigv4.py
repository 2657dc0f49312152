"""Signs requests with botocore's SigV4Auth, the signer the AWS SDK for Python uses, so that
tests/sigv4_reference.rs can compare the gateway's signatures with it byte for byte.

Reads a JSON list of cases on stdin, each:
  {"name", "method", "url", "headers": [[name, value], ...], "body_hex",
   "access_key", "secret_key", "token" (null for long-lived credentials),
   "region", "service", "unix_time"}
and prints one JSON line: a list of
  {"name", "canonical_request", "string_to_sign", "headers": {lower-case name: value}}
with the headers as botocore left the request after signing.

The clock is botocore's own `get_current_datetime`, replaced per case by the case's time.
"""

import datetime
import json
import sys

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class RecordingSigV4Auth(SigV4Auth):
    """SigV4Auth unchanged, keeping the intermediate strings it computes."""

    def canonical_request(self, request):
        self.recorded_canonical_request = super().canonical_request(request)
        return self.recorded_canonical_request

    def string_to_sign(self, request, canonical_request):
        self.recorded_string_to_sign = super().string_to_sign(request, canonical_request)
        return self.recorded_string_to_sign


def sign(case):
    at = datetime.datetime.fromtimestamp(case["unix_time"], datetime.timezone.utc)
    botocore.auth.get_current_datetime = lambda *a, **k: at.replace(tzinfo=None)
    request = AWSRequest(
        method=case["method"],
        url=case["url"],
        data=bytes.fromhex(case["body_hex"]),
        headers=dict(case["headers"]),
    )
    credentials = Credentials(case["access_key"], case["secret_key"], case.get("token"))
    signer = RecordingSigV4Auth(credentials, case["service"], case["region"])
    signer.add_auth(request)
    return {
        "name": case["name"],
        "canonical_request": signer.recorded_canonical_request,
        "string_to_sign": signer.recorded_string_to_sign,
        "headers": {k.lower(): v for k, v in request.headers.items()},
    }


def main():
    cases = json.load(sys.stdin)
    print(json.dumps([sign(case) for case in cases]))


if __name__ == "__main__":
    main()
