#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/).

The harness keys are derived from fixed seeds (see crates/tally-fuzz/src/keys.rs):
Ed25519 seed 0x5a * 32 for JWS and DPoP, 0xa5 * 32 for checkpoints named
tally.example/fuzz. Seeds signed here verify under those keys, so the fuzzer
starts from inputs that reach past every signature check. Run from anywhere:
    python3 fuzz/seeds/generate.py
"""
import base64
import hashlib
import json
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_700_000_000


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def raw_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


JWS_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x5A] * 32))
JWK = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw_pub(JWS_KEY))}


def compact(header: bytes, payload: bytes) -> str:
    signing_input = b64u(header) + "." + b64u(payload)
    return signing_input + "." + b64u(JWS_KEY.sign(signing_input.encode()))


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


# --- jws -------------------------------------------------------------------
hdr = js({"alg": "EdDSA", "kid": "fuzz", "typ": "at+jwt"})
claims = {"iss": "https://issuer.example", "sub": "alice", "aud": "tally",
          "exp": NOW + 900, "nbf": NOW, "iat": NOW, "jti": "t-0001"}
jws = {
    "s-valid": b"s" + hdr + b"\n" + js(claims),
    "s-aud-array": b"s" + hdr + b"\n" + js({**claims, "aud": ["tally", "orders"]}),
    "s-cnf": b"s" + hdr + b"\n" + js({**claims, "cnf": {"jkt": b64u(b"\x01" * 32)}, "scope": "read"}),
    "s-expired": b"s" + hdr + b"\n" + js({**claims, "exp": NOW - 3600}),
    "s-duplicate-sub": b"s" + hdr + b'\n{"iss":"https://issuer.example","sub":"alice","sub":"root","aud":"tally","exp":1700000900}',
    "s-escapes": b"s" + hdr + b'\n{"iss":"https://issuer.example","sub":"\\u0061lice\\ud83d\\ude00","aud":"tally","exp":1.7e9,"n":-0,"x":[1,{"y":null}],"t":true}',
    "s-whitespace": b"s" + b' { "alg" : "EdDSA" , "kid" : "fuzz" } ' + b"\n" + b' {\r\n"sub":"a","exp":1700000900}\t',
    "s-alg-none": b"s" + js({"alg": "none", "kid": "fuzz"}) + b"\n" + js(claims),
    "s-alg-rs256": b"s" + js({"alg": "RS256", "kid": "fuzz"}) + b"\n" + js(claims),
    "s-crit": b"s" + js({"alg": "EdDSA", "kid": "fuzz", "crit": ["exp"]}) + b"\n" + js(claims),
    "s-jku": b"s" + js({"alg": "EdDSA", "kid": "fuzz", "jku": "https://evil.example/jwks"}) + b"\n" + js(claims),
    "s-no-kid": b"s" + js({"alg": "EdDSA"}) + b"\n" + js(claims),
    "s-big-numbers": b"s" + hdr + b'\n{"sub":"a","exp":99999999999999999999999,"iat":1e400,"nbf":-9223372036854775809}',
    "s-deep": b"s" + hdr + b"\n" + b'{"sub":"a","x":' + b"[" * 64 + b"]" * 64 + b"}",
    "raw-valid": compact(hdr, js(claims)),
    "raw-bad-signature": compact(hdr, js(claims))[:-4] + "AAAA",
    "raw-padded": compact(hdr, js(claims)) + "==",
    "raw-dots": "a.b.c",
    "raw-empty-parts": "..",
    "raw-five-parts": "a.b.c.d.e",
    "raw-json-serialization": '{"payload":"e30","signatures":[]}',
}
for k, v in jws.items():
    write("jws", k, v)

ec_key = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
ec_nums = ec_key.public_key().public_numbers()
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_nums = rsa_key.public_key().public_numbers()
ec_jwk = {"kty": "EC", "crv": "P-256", "x": b64u(ec_nums.x.to_bytes(32, "big")),
          "y": b64u(ec_nums.y.to_bytes(32, "big")), "use": "sig", "alg": "ES256"}
rsa_jwk = {"kty": "RSA", "n": b64u(rsa_nums.n.to_bytes(256, "big")), "e": "AQAB", "kid": "r1",
           "key_ops": ["verify"]}
write("jws", "k-okp", b"k" + js(JWK))
write("jws", "k-ec", b"k" + js(ec_jwk))
write("jws", "k-rsa", b"k" + js(rsa_jwk))
write("jws", "k-jwks", b"k" + js({"keys": [dict(JWK, kid="a"), dict(ec_jwk, kid="b"), rsa_jwk]}))
write("jws", "k-private", b"k" + js(dict(JWK, d=b64u(bytes([0x5A] * 32)))))
write("jws", "k-oct", b"k" + js({"kty": "oct", "k": "c2VjcmV0"}))

# --- dpop ------------------------------------------------------------------
URL = "https://tally.example/v1/token"
ath = b64u(hashlib.sha256(b"fuzz-access-token").digest())
dh = js({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": JWK})
proof = {"jti": "j-0001", "htm": "POST", "htu": URL, "iat": NOW}
dpop = {
    "s-token-request": b"s" + dh + b"\n" + js(proof),
    "s-resource": b"s" + dh + b"\n" + js({**proof, "ath": ath}),
    "s-nonce": b"s" + dh + b"\n" + js({**proof, "nonce": "fuzz-nonce", "ath": ath}),
    "s-htu-variant": b"s" + dh + b"\n" + js({**proof, "htu": "HTTPS://Tally.Example:443/v1/token?x=1#f"}),
    "s-stale": b"s" + dh + b"\n" + js({**proof, "iat": NOW - 3600}),
    "s-future": b"s" + dh + b"\n" + js({**proof, "iat": NOW + 3600}),
    "s-private-jwk": b"s" + js({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": dict(JWK, d="AA")}) + b"\n" + js(proof),
    "s-wrong-typ": b"s" + js({"typ": "jwt", "alg": "EdDSA", "jwk": JWK}) + b"\n" + js(proof),
    "s-kid-and-jwk": b"s" + js({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": JWK, "kid": "x"}) + b"\n" + js(proof),
    "s-ec-jwk": b"s" + js({"typ": "dpop+jwt", "alg": "ES256", "jwk": ec_jwk}) + b"\n" + js(proof),
    "s-duplicate-htm": b"s" + dh + b'\n{"jti":"j","htm":"GET","htm":"POST","htu":"' + URL.encode() + b'","iat":1700000000}',
    "raw-valid": compact(dh, js(proof)),
    "raw-resource": compact(dh, js({**proof, "ath": ath})),
    "raw-garbage": "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.",
}
for k, v in dpop.items():
    write("dpop", k, v)

# --- note ------------------------------------------------------------------
NOTE_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0xA5] * 32))
NAME = "tally.example/fuzz"
note_pub = raw_pub(NOTE_KEY)
key_hash = hashlib.sha256(NAME.encode() + b"\n" + b"\x01" + note_pub).digest()[:4]


def signed_note(text: str) -> str:
    sig = NOTE_KEY.sign(text.encode())
    return text + "\n" + "\u2014 " + NAME + " " + base64.b64encode(key_hash + sig).decode() + "\n"


root = base64.b64encode(hashlib.sha256(b"").digest()).decode()
cp = f"{NAME}\n0\n{root}\n"
cp_big = f"{NAME}\n18446744073709551615\n{base64.b64encode(bytes(range(32))).decode()}\nextension one\n"
note = {
    "s-checkpoint": "s" + cp,
    "s-checkpoint-extensions": "s" + cp_big,
    "s-other-origin": "s" + "example.com/log\n7\n" + root + "\n",
    "s-leading-zero": "s" + f"{NAME}\n07\n{root}\n",
    "s-no-newline": "s" + f"{NAME}\n1\n{root}",
    "s-free-text": "sIf you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n",
    "raw-signed-checkpoint": signed_note(cp),
    "raw-signed-extensions": signed_note(cp_big),
    "raw-cosigned": signed_note(cp) + "\u2014 witness.example/w " + base64.b64encode(b"\x00" * 76).decode() + "\n",
    # golang.org/x/mod/sumdb/note's documented example (an unknown key here).
    "raw-peter-neumann": "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
    "raw-bad-signature": signed_note(cp)[:-6] + "AAAA=\n",
    "v-harness": "v" + f"{NAME}+{key_hash.hex()}+" + base64.b64encode(b"\x01" + note_pub).decode(),
    "v-peter-neumann": "vPeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "v-sum-golang": "vsum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ev+2i+LXGm3UwNZWD",
}
for k, v in note.items():
    write("note", k, v)

# --- record ----------------------------------------------------------------
def s16(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def record(token_id, subject, kid, issuer, iat, exp, ctx, version=1, digest=None):
    return (bytes([version]) + s16(token_id) + (digest or hashlib.sha256(token_id.encode()).digest())
            + s16(subject) + s16(kid) + s16(issuer) + struct.pack(">qq", iat, exp) + s16(ctx))


records = {
    "valid": record("t-0001", "alice", "kid-1", "https://issuer.example", NOW, NOW + 900, "pwd"),
    "otp": record("t-0002", "bob", "kid-1", "https://issuer.example", NOW, NOW + 900, "pwd+otp"),
    "external": record("ext-9", "carol@idp", "idp-kid", "https://idp.example", -1, 2**63 - 1, "external:okta"),
    "empty-fields": record("x", "", "", "", 0, 0, ""),
    "unicode": record("t-\u00e9", "\u5c71\u7530", "k", "i", NOW, NOW, "pwd"),
    "long-field": record("t", "s" * 1024, "k", "i", NOW, NOW, "pwd"),
    "too-long-field": record("t", "s" * 1025, "k", "i", NOW, NOW, "pwd"),
    "nul": record("t", "a\x00b", "k", "i", NOW, NOW, "pwd"),
    "version-2": record("t", "a", "k", "i", NOW, NOW, "pwd", version=2),
    "trailing": record("t", "a", "k", "i", NOW, NOW, "pwd") + b"\x00",
    "truncated": record("t", "a", "k", "i", NOW, NOW, "pwd")[:-2],
    "empty-token-id": record("", "a", "k", "i", NOW, NOW, "pwd"),
}
for k, v in records.items():
    write("record", k, v)

# --- target ----------------------------------------------------------------
targets = [
    "/", "/orders/1", "/orders/1?x=1&y=%2F", "/public/../private/secret",
    "/public/%2e%2e/private/secret", "/public/%2E%2E/private/secret", "/public%2F..%2Fprivate/secret",
    "/public\\..\\private\\secret", "/publicity/../private/secret", "//orders/1", "/%6frders/1",
    "/x/../orders/1", "/a/./b/./", "/a/b/..", "/..", "/a/../..", "/a/..;x/b", "/a;x/b;y=1",
    "/%7euser/%7Efile", "/%41%42%43", "/%zz", "/%4", "/%00", "/%25", "/%5c", "/a%2fb", "/a b",
    "/caf\u00e9", "*", "http://example.com/x", "", "?q", "/?", "/#frag", "/a?b?c#d",
    "/" + "a/" * 200, "/" + "../" * 3, "/a/b/c/%2e/%2E%2e/d", "/.well-known/jwks.json",
]
for i, t in enumerate(targets):
    write("target", f"t{i:03}", t)

# --- config ----------------------------------------------------------------
configs = {
    "empty": "",
    "basic": 'version = 1\nlisten = "127.0.0.1:8080"\nissuer = "https://id.example"\naudience = "tally"\n'
             "token_ttl_secs = 900\nleeway_secs = 60\nkey_max_age_secs = 2592000\nrefresh_ttl_secs = 1209600\n",
    "gate": 'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\nmiss_rate_per_sec = 1\nmiss_burst = 20\n'
            'device_header = "X-Device-Id"\ndpop_nonce = true\naccess_retention_days = 30\n\n'
            '[gate]\nlisten = "127.0.0.1:0"\nmode = "monitor"\nupstream_timeout_secs = 5\n\n'
            '[[gate.routes]]\nprefix = "/public"\nupstream = "http://127.0.0.1:9000"\nrequire_token = false\n\n'
            '[[gate.routes]]\nprefix = "/orders/"\nupstream = "http://127.0.0.1:9001"\naudience = "orders"\n'
            'data = ["name", "orders"]\nmode = "enforce"\n',
    "bad-prefix": '[gate]\nlisten = "127.0.0.1:0"\n[[gate.routes]]\nprefix = "/a/../b"\nupstream = "http://127.0.0.1:1"\n',
    "detector": '[detector]\nmass_access_window_secs = 600\nmass_access_threshold = 100\nreplay_window_secs = 300\n'
                'replay_min_sources = 3\ncanary_accounts = ["honey"]\nmax_actors = 1000\n\n'
                '[actions]\nforged_token = ["compromise_key"]\nmass_access = ["block_actor"]\n'
                'token_replay = ["block_actor", "revoke_subject"]\n\n'
                '[[regimes]]\nid = "sec_8k_105"\nenabled = true\n\n'
                '[[regimes]]\nname = "Own"\nauthority = "Board"\ndeadline = {hours = 48}\n\n'
                '[contacts]\ndpo = "dpo@example.com"\n',
    "flood": "[access_log]\nsamples_per_actor = 4\nrefusal_bytes_per_sec = 1048576\nrefusal_burst_bytes = 16777216\n"
             "max_actors_per_sec = 10000\n\n[connections]\nheader_read_timeout_secs = 60\nidle_timeout_secs = 75\n"
             "max_per_address = 256\nmax_total = 16384\n",
    "issuers": '[[issuers]]\nname = "okta"\niss = "https://okta.example"\njwks_url = "https://okta.example/jwks"\n'
               'jwks_refresh_secs = 300\ncredential_env = "OKTA_CRED"\n',
    "webhooks": '[[webhooks]]\nname = "pager"\nurl = "https://hooks.example/x"\nsecret_env = "HOOK_SECRET"\n\n'
                '[set_receiver]\nurl = "https://ssf.example/events"\naudience = "ssf"\ntoken_env = "SSF_TOKEN"\n',
    "storage": '[storage]\nurl = "postgres://tally@127.0.0.1:5432/test?sslmode=disable"\nschema = "tally"\n'
               'node = "gate-1"\nredis_url = "redis://127.0.0.1:6379/0"\n',
    "pkcs11": 'signer = "pkcs11"\n[pkcs11]\nmodule = "/usr/lib/softhsm/libsofthsm2.so"\ntoken_label = "tally"\n'
              'pin_env = "PIN"\n',
    "passwords": "[passwords]\nmin_length = 12\n",
    "unknown-key": 'lisen = "127.0.0.1:1"\n',
    "out-of-range": "token_ttl_secs = 0\n",
}
for k, v in configs.items():
    write("config", k, v)

# --- tiles -----------------------------------------------------------------
# Paths (C2SP tlog-tiles spellings, good and bad), entry bundles, and stored
# tiles to resume an appender's edge from.


def bundle(entries):
    return b"".join(struct.pack(">H", len(e)) + e for e in entries)


def leaf(e):
    return hashlib.sha256(b"\x00" + e).digest()


tiles = {
    "path-full": b"ptile/0/x001/x234/067",
    "path-partial": b"ptile/2/000.p/1",
    "path-entries": b"ptile/entries/273.p/112",
    "path-noncanonical": b"ptile/0/1000",
    "path-width-0": b"ptile/0/000.p/0",
    "bundle": b"b\x03" + bundle([b"entry-0", b"", b"x" * 300]),
    "bundle-truncated": b"b\x00\x00\x09entry",
    "bundle-too-many": b"b\x01" + bundle([b"a", b"b"]),
    # An edge of 3 entries: its level-0 tile and bundle are served for
    # every request, so only one of them parses where it is asked for.
    "resume-3": b"r" + struct.pack(">Q", 3) + b"".join(leaf(b"e%d" % i) for i in range(3)),
    "resume-300": b"r" + struct.pack(">Q", 300) + b"\x00" * (44 * 32),
}
for k, v in tiles.items():
    write("tiles", k, v)
