"""Calls AssumeRole with botocore's own STS client, the one the AWS SDK for Python uses, so
that tests/identity_sts.rs can prove the fake STS (tests/common/fake_sts.rs) accepts what AWS's
client signs and answers what AWS's client reads.

Reads a JSON object on stdin:
  {"endpoint", "cases": [{"name", "access_key", "secret_key", "token" (null for long-lived
   keys), "role_arn", "session_name", "duration"}]}
and prints one JSON line: a list of
  {"name", "credentials": {"access_key_id", "secret_access_key", "session_token",
   "expiration" (ISO 8601, UTC)}} or {"name", "error": {"code", "status"}}
"""

import datetime
import json
import sys

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError


def assume(endpoint, case):
    client = botocore.session.get_session().create_client(
        "sts",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=case["access_key"],
        aws_secret_access_key=case["secret_key"],
        aws_session_token=case.get("token"),
        # One attempt: a refusal is the answer under test, not something to retry.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    try:
        answer = client.assume_role(
            RoleArn=case["role_arn"],
            RoleSessionName=case["session_name"],
            DurationSeconds=case["duration"],
        )
    except ClientError as error:
        return {
            "name": case["name"],
            "error": {
                "code": error.response["Error"]["Code"],
                "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
            },
        }
    credentials = answer["Credentials"]
    expiration = credentials["Expiration"].astimezone(datetime.timezone.utc)
    return {
        "name": case["name"],
        "credentials": {
            "access_key_id": credentials["AccessKeyId"],
            "secret_access_key": credentials["SecretAccessKey"],
            "session_token": credentials["SessionToken"],
            "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def main():
    request = json.load(sys.stdin)
    print(json.dumps([assume(request["endpoint"], case) for case in request["cases"]]))


if __name__ == "__main__":
    main()
