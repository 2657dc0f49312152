"""Reference OAuth2 client for the fake token endpoint (tests/common/fake_oauth.rs).

Obtains a token with the client credentials grant through oauthlib's
BackendApplicationClient (via requests-oauthlib), the way a real client of an IdP does,
so the fake is checked against an independent implementation of RFC 6749, not only
against the gateway's own client.

Settings come from the environment: CF_TOKEN_URL, CF_CLIENT_ID, CF_CLIENT_SECRET,
CF_AUTH_METHOD ("basic" or "form"), CF_SCOPE. Prints the token response as JSON.
"""

import json
import os
import sys

# The fake listens on plain HTTP on loopback; oauthlib refuses http:// without this.
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

from oauthlib.oauth2 import BackendApplicationClient  # noqa: E402
from requests.auth import HTTPBasicAuth  # noqa: E402
from requests_oauthlib import OAuth2Session  # noqa: E402


def main() -> int:
    url = os.environ["CF_TOKEN_URL"]
    client_id = os.environ["CF_CLIENT_ID"]
    secret = os.environ["CF_CLIENT_SECRET"]
    method = os.environ.get("CF_AUTH_METHOD", "basic")
    scope = os.environ.get("CF_SCOPE") or None
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    # requests-oauthlib passes extra arguments into the token request body.
    extra = {"scope": scope} if scope else {}
    if method == "basic":
        token = session.fetch_token(
            token_url=url, auth=HTTPBasicAuth(client_id, secret), timeout=10, **extra
        )
    elif method == "form":
        token = session.fetch_token(
            token_url=url,
            client_id=client_id,
            client_secret=secret,
            include_client_id=True,
            timeout=10,
            **extra,
        )
    else:
        print(f"unknown CF_AUTH_METHOD {method!r}", file=sys.stderr)
        return 2
    print(json.dumps(token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
