"""An identity provider built on PyJWT: makes keys, publishes a JWKS, mints tokens.

    pyjwt_idp.py keys DIR        -> DIR/jwks.json (public), DIR/idp-es.pem, DIR/idp-rs.pem, DIR/rogue.pem
    pyjwt_idp.py mint DIR SPECS  -> one compact JWT per line, for a JSON list of
                                    {"key": "idp-es"|"idp-rs"|"rogue", "claims": {...}}
"""
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ALGS = {"idp-es": "ES256", "idp-rs": "RS256", "rogue": "ES256"}
# A second provider publishes its keys under other kids (KID_PREFIX=...).
PREFIX = os.environ.get("KID_PREFIX", "")


def keys(out):
    made = {
        "idp-es": ec.generate_private_key(ec.SECP256R1()),
        "idp-rs": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rogue": ec.generate_private_key(ec.SECP256R1()),
    }
    published = []
    for kid, key in made.items():
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with open(os.path.join(out, kid + ".pem"), "wb") as f:
            f.write(pem)
        if kid == "rogue":
            continue  # never published: its tokens must not verify
        algo = ECAlgorithm if ALGS[kid] == "ES256" else RSAAlgorithm
        jwk = json.loads(algo.to_jwk(key.public_key()))
        jwk.update({"kid": PREFIX + kid, "alg": ALGS[kid], "use": "sig"})
        published.append(jwk)
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": published}, f)


def mint(out, specs):
    for spec in json.loads(specs):
        kid = spec["key"]
        with open(os.path.join(out, kid + ".pem"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        headers = {"kid": PREFIX + ("idp-es" if kid == "rogue" else kid), "typ": "JWT"}
        print(jwt.encode(spec["claims"], key, algorithm=ALGS[kid], headers=headers))


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    else:
        mint(sys.argv[2], sys.argv[3])
