"""Reference checks of Google JWT-bearer assertions (RFC 7523) with pyjwt, so the gateway's
assertions and the fake token endpoint are each checked against a JWT library that is not ours.

Run by tests/identity_google.rs as `python3 tests/reference/google_jwt.py MODE`; settings in
environment variables; prints one JSON line.

- `verify`: decodes CF_ASSERTION with jwt.decode(..., algorithms=["RS256"], audience=CF_AUDIENCE,
  issuer=CF_ISSUER), the public key taken from the private key of the service-account file
  CF_SERVICE_ACCOUNT (or of the PKCS#8 PEM file CF_KEY_PEM when set). Prints
  {"ok": true, "header": ..., "claims": ...} or {"ok": false, "error": "<pyjwt exception name>"}.
- `sign`: signs the claims CF_CLAIMS (JSON) with the service account's private key, RS256, the
  header's kid the file's private_key_id. Prints {"assertion": "<JWT>"}.
"""

import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization


def service_account():
    with open(os.environ["CF_SERVICE_ACCOUNT"], encoding="utf-8") as f:
        return json.load(f)


def private_key():
    pem_path = os.environ.get("CF_KEY_PEM")
    if pem_path:
        with open(pem_path, "rb") as f:
            pem = f.read()
    else:
        pem = service_account()["private_key"].encode()
    return serialization.load_pem_private_key(pem, password=None)


def verify():
    assertion = os.environ["CF_ASSERTION"]
    public_key = private_key().public_key()
    try:
        claims = jwt.decode(
            assertion,
            public_key,
            algorithms=["RS256"],
            audience=os.environ["CF_AUDIENCE"],
            issuer=os.environ["CF_ISSUER"],
            options={"require": ["iss", "aud", "iat", "exp"]},
        )
    except jwt.PyJWTError as e:
        return {"ok": False, "error": type(e).__name__}
    return {"ok": True, "header": jwt.get_unverified_header(assertion), "claims": claims}


def sign():
    account = service_account()
    claims = json.loads(os.environ["CF_CLAIMS"])
    assertion = jwt.encode(
        claims,
        private_key(),
        algorithm="RS256",
        headers={"kid": account["private_key_id"]},
    )
    return {"assertion": assertion}


def main():
    modes = {"verify": verify, "sign": sign}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit("usage: google_jwt.py verify|sign")
    print(json.dumps(modes[sys.argv[1]]()))


if __name__ == "__main__":
    main()
