"""Tokens as an identity provider mints them, for tests/idp_tokens.rs.

Written with PyJWT and cryptography (pinned in requirements.txt, installed by
scripts/setup-test.sh): a library independent of the server's. Makes fresh RSA 2048,
EC P-256 and Ed25519 keys, and writes to the directory given:
  jwks.json       the signing keys' public halves (kid rsa-1, ec-1, ed-1) and, as Keycloak
                  publishes, an encryption key the server must skip;
  jwks-next.json  after a rollover: ec-1 and a new RSA key rsa-2 (rsa-1 gone);
  tokens.json     {case: token}; claims as Keycloak puts them (roles under
                  realm_access.roles).
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/realms/hospital"
AUDIENCE = "medledger"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(algorithm, key, kid, alg):
    doc = json.loads(algorithm.to_jwk(key.public_key()))
    doc.update({"kid": kid, "use": "sig", "alg": alg})
    return doc


def main(out: Path) -> None:
    now = int(time.time())
    rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec1 = ec.generate_private_key(ec.SECP256R1())
    ed1 = ed25519.Ed25519PrivateKey.generate()
    enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc_jwk = json.loads(RSAAlgorithm.to_jwk(enc.public_key()))
    enc_jwk.update({"kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"})
    keys = {
        "rsa-1": jwk(RSAAlgorithm, rsa1, "rsa-1", "RS256"),
        "rsa-2": jwk(RSAAlgorithm, rsa2, "rsa-2", "RS256"),
        "ec-1": jwk(ECAlgorithm, ec1, "ec-1", "ES256"),
        "ed-1": jwk(OKPAlgorithm, ed1, "ed-1", "EdDSA"),
    }
    (out / "jwks.json").write_text(
        json.dumps({"keys": [keys["rsa-1"], enc_jwk, keys["ec-1"], keys["ed-1"]]})
    )
    (out / "jwks-next.json").write_text(json.dumps({"keys": [keys["ec-1"], keys["rsa-2"]]}))

    def claims(**changes):
        c = {
            "iss": ISSUER,
            "aud": ["account", AUDIENCE],
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "realm_access": {"roles": ["offline_access", "admin"]},
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        c.update(changes)
        return {k: v for k, v in c.items() if v is not None}

    def sign(key, alg, kid, **changes):
        return jwt.encode(claims(**changes), key, algorithm=alg, headers={"kid": kid})

    rsa1_public_pem = rsa1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def hs256_with_public_key():
        # PyJWT refuses a PEM key as an HMAC secret (its guard against this attack), so
        # the confused token is signed by hand.
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        body = b64(json.dumps(claims()).encode())
        mac = hmac.new(rsa1_public_pem, f"{header}.{body}".encode(), hashlib.sha256)
        return f"{header}.{body}.{b64(mac.digest())}"

    def alg_none():
        header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        return f"{header}.{b64(json.dumps(claims()).encode())}."

    tokens = {
        "rs256": sign(rsa1, "RS256", "rsa-1"),
        "es256": sign(ec1, "ES256", "ec-1"),
        "eddsa": sign(ed1, "EdDSA", "ed-1"),
        "wrong_aud": sign(rsa1, "RS256", "rsa-1", aud="another-service"),
        "no_aud": sign(rsa1, "RS256", "rsa-1", aud=None),
        "wrong_iss": sign(rsa1, "RS256", "rsa-1", iss="https://evil.test/realms/hospital"),
        "expired": sign(rsa1, "RS256", "rsa-1", iat=now - 900, nbf=now - 900, exp=now - 600),
        "not_yet_valid": sign(rsa1, "RS256", "rsa-1", nbf=now + 600, exp=now + 900),
        "too_long": sign(rsa1, "RS256", "rsa-1", exp=now + 7200),
        "no_iat": sign(rsa1, "RS256", "rsa-1", iat=None),
        "unknown_kid": sign(rsa1, "RS256", "rsa-9"),
        "wrong_key": sign(rsa2, "RS256", "rsa-1"),
        "two_roles": sign(rsa1, "RS256", "rsa-1", realm_access={"roles": ["admin", "patient"]}),
        "no_role": sign(rsa1, "RS256", "rsa-1", realm_access={"roles": ["offline_access"]}),
        "alg_none": alg_none(),
        "hs256_confusion": hs256_with_public_key(),
        "es256_with_rsa_kid": sign(ec1, "ES256", "rsa-1"),
        "next_rsa": sign(rsa2, "RS256", "rsa-2"),
    }
    (out / "tokens.json").write_text(json.dumps(tokens))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
