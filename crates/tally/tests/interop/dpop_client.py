"""A DPoP client (RFC 9449) built on PyJWT, independent of tally's code.

    dpop_client.py keygen DIR              -> DIR/dpop.pem, prints the public JWK (JSON)
    dpop_client.py proof DIR METHOD URL [ACCESS_TOKEN|-] [IAT_OFFSET] [NONCE]
                                           -> prints one DPoP proof JWT
"""
import base64
import hashlib
import json
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


def keygen(out):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(os.path.join(out, "dpop.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    print(ECAlgorithm.to_jwk(key.public_key()))


def proof(out, method, url, token=None, iat_offset=0, nonce=None):
    with open(os.path.join(out, "dpop.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time()) + iat_offset}
    if nonce:
        claims["nonce"] = nonce
    if token:
        digest = hashlib.sha256(token.encode("ascii")).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    print(jwt.encode(claims, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk}))


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2])
    else:
        token = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
        offset = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        nonce = sys.argv[7] if len(sys.argv) > 7 else None
        proof(sys.argv[2], sys.argv[3], sys.argv[4], token, offset, nonce)
