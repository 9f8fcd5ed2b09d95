//! Walking around the gate: a path the gate decides one way and the
//! upstream resolves another, an identity header the client chooses, an
//! address the client chooses, forged tokens at endpoints other than the
//! gate.

use crate::fixture::{Door, Expect, PUBLIC, Probe, SECRET};
use crate::gateways::{Gateway, client_address, dpop_through, identity_headers};
use crate::{Attack, Run};

const fn gate(request: &'static str, expect: Expect) -> Run {
    Run::Request(Probe {
        to: Door::Gate,
        request,
        expect,
    })
}

const fn api(request: &'static str, expect: Expect) -> Run {
    Run::Request(Probe {
        to: Door::Api,
        request,
        expect,
    })
}

/// Served: the upstream answered 200 with `has` in the body.
const fn served(has: &'static [&'static str], lacks: &'static [&'static str]) -> Expect {
    Expect {
        status: 200,
        verdict: None,
        body_has: has,
        body_lacks: lacks,
    }
}

/// No token, on a path that needs one.
const MISSING: Expect = Expect::refused(401, "missing");
/// A request target that cannot be normalised safely.
const BAD_TARGET: Expect = Expect::refused(400, "malformed");
/// A target with no route: tally's own 404, not an upstream's.
const NO_ROUTE: Expect = Expect {
    status: 404,
    verdict: None,
    body_has: &["no gate route"],
    body_lacks: &[SECRET, PUBLIC],
};

pub const ROWS: &[Attack] = &[
    // 1. Routes decided on the raw path.
    Attack {
        id: "route.dot-segments",
        item: 1,
        what: "/public/../private/secret is /private, and needs a token",
        run: gate(
            "GET /public/../private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.encoded-dots",
        item: 1,
        what: "/public/%2e%2e/private/secret is /private",
        run: gate(
            "GET /public/%2e%2e/private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.mixed-encoded-dots",
        item: 1,
        what: "/public/.%2E/private/secret is /private",
        run: gate(
            "GET /public/.%2E/private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.encoded-slash",
        item: 1,
        what: "/public%2F..%2Fprivate/secret is refused with 400",
        run: gate(
            "GET /public%2F..%2Fprivate/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.backslash",
        item: 1,
        what: "/public\\..\\private/secret is refused with 400",
        run: gate(
            "GET /public\\..\\private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.encoded-backslash",
        item: 1,
        what: "/public%5C..%5Cprivate/secret is refused with 400",
        run: gate(
            "GET /public%5C..%5Cprivate/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.double-encoding",
        item: 1,
        what: "/public/%252e%252e/private/secret (decoded twice by some) is refused",
        run: gate(
            "GET /public/%252e%252e/private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.prefix-not-a-segment",
        item: 1,
        what: "/publicity/../private/secret is /private",
        run: gate(
            "GET /publicity/../private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.prefix-whole-segments",
        item: 1,
        what: "/publicity/x is not under /public",
        run: gate(
            "GET /publicity/x HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            NO_ROUTE,
        ),
    },
    Attack {
        id: "route.merged-slashes",
        item: 1,
        what: "/public//../private/secret is /private",
        run: gate(
            "GET /public//../private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.above-root",
        item: 1,
        what: "/public/../../private/secret climbs above the root: 400",
        run: gate(
            "GET /public/../../private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.dot-parameters",
        item: 1,
        what: "/public/..;/private/secret (.. for servlet containers) is refused",
        run: gate(
            "GET /public/..;/private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            BAD_TARGET,
        ),
    },
    Attack {
        id: "route.path-parameters",
        item: 1,
        what: "/private;x/secret is still under /private",
        run: gate(
            "GET /private;x/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.absolute-form",
        item: 1,
        what: "GET http://elsewhere/public/../private/secret is decided on its path",
        run: gate(
            "GET http://elsewhere/public/../private/secret HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            MISSING,
        ),
    },
    Attack {
        id: "route.public-still-public",
        item: 1,
        what: "/public/./x/../index.html is served without a token",
        run: gate(
            "GET /public/./x/../index.html HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            served(&[PUBLIC], &[SECRET]),
        ),
    },
    Attack {
        id: "route.private-with-token",
        item: 1,
        what: "/private/%73ecret with a token is the secret (encoded unreserved decoded)",
        run: gate(
            "GET /private/%73ecret HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nConnection: close\n\n",
            served(&[SECRET], &[]),
        ),
    },
    Attack {
        id: "route.forwards-normal-form",
        item: 1,
        what: "the upstream receives the path tally decided on, not the raw one",
        run: gate(
            "GET /open/a/%2e/b//../c%7e?q=../x HTTP/1.1\nHost: {host}\nConnection: close\n\n",
            served(&["\"path\": \"/open/a/c~\""], &[]),
        ),
    },
    Attack {
        id: "check.encoded-route",
        item: 1,
        what: "/v1/check: X-Original-URI /%6frders/1 needs the orders audience",
        run: api(
            "GET /v1/check HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nX-Original-URI: /%6frders/1\nConnection: close\n\n",
            Expect::refused(401, "wrong_audience"),
        ),
    },
    Attack {
        id: "check.double-slash-route",
        item: 1,
        what: "/v1/check: X-Original-URI //orders/1 needs the orders audience",
        run: api(
            "GET /v1/check HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nX-Original-URI: //orders/1\nConnection: close\n\n",
            Expect::refused(401, "wrong_audience"),
        ),
    },
    Attack {
        id: "check.dot-segment-route",
        item: 1,
        what: "/v1/check: X-Original-URI /x/../orders/1 needs the orders audience",
        run: api(
            "GET /v1/check HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nX-Original-URI: /x/../orders/1\nConnection: close\n\n",
            Expect::refused(401, "wrong_audience"),
        ),
    },
    Attack {
        id: "check.unsafe-target",
        item: 1,
        what: "/v1/check: X-Original-URI /orders%2F1 is refused, not decided",
        run: api(
            "GET /v1/check HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nX-Original-URI: /orders%2F1\nConnection: close\n\n",
            Expect::refused(403, "malformed"),
        ),
    },
    // 2. Identity headers chosen by the client.
    Attack {
        id: "identity.underscore-header",
        item: 2,
        what: "X_Tally_Subject: root never reaches a WSGI upstream",
        run: gate(
            "GET /whoami HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nX_Tally_Subject: root\nConnection: close\n\n",
            served(&["\"HTTP_X_TALLY_SUBJECT\": \"alice\""], &["root"]),
        ),
    },
    Attack {
        id: "identity.underscore-header-open-route",
        item: 2,
        what: "x_tally_subject: root is dropped on a route without a token too",
        run: gate(
            "GET /open HTTP/1.1\nHost: {host}\nx_tally_subject: root\nX_TALLY-Token_Id: t1\nConnection: close\n\n",
            served(&["\"tally\": {}"], &["root"]),
        ),
    },
    Attack {
        id: "identity.upper-case-header",
        item: 2,
        what: "X-TALLY-SUBJECT: root is dropped",
        run: gate(
            "GET /open HTTP/1.1\nHost: {host}\nX-TALLY-SUBJECT: root\nConnection: close\n\n",
            served(&["\"tally\": {}"], &["root"]),
        ),
    },
    Attack {
        id: "identity.connection-drops-inserted",
        item: 2,
        what: "Connection: x-tally-subject, x-tally-token-id cannot remove tally's headers",
        run: gate(
            "GET /whoami HTTP/1.1\nHost: {host}\nAuthorization: Bearer {token}\nConnection: x-tally-subject, x-tally-token-id, close\n\n",
            served(
                &[
                    "\"HTTP_X_TALLY_SUBJECT\": \"alice\"",
                    "HTTP_X_TALLY_TOKEN_ID",
                ],
                &[],
            ),
        ),
    },
    Attack {
        id: "identity.connection-drops-verdict",
        item: 2,
        what: "in monitor mode, Connection: x-tally-verdict cannot hide a forgery",
        run: gate(
            "GET /watched HTTP/1.1\nHost: {host}\nAuthorization: Bearer {forged}\nConnection: X-Tally-Verdict, close\n\n",
            served(&["\"HTTP_X_TALLY_VERDICT\": \"not_issued\""], &["root"]),
        ),
    },
    // 3. The client's own address, through the documented gateways.
    Attack {
        id: "gateway.nginx-client-address",
        item: 3,
        what: "through docs/nginx.conf, X-Forwarded-For cannot move the client's address",
        run: Run::Scenario(|| client_address(Gateway::Nginx)),
    },
    Attack {
        id: "gateway.caddy-client-address",
        item: 3,
        what: "through docs/Caddyfile, X-Forwarded-For cannot move the client's address",
        run: Run::Scenario(|| client_address(Gateway::Caddy)),
    },
    Attack {
        id: "gateway.nginx-identity-headers",
        item: 3,
        what: "through docs/nginx.conf, no client header reaches the upstream as tally's",
        run: Run::Scenario(|| identity_headers(Gateway::Nginx)),
    },
    Attack {
        id: "gateway.caddy-identity-headers",
        item: 3,
        what: "through docs/Caddyfile, no client header reaches the upstream as tally's",
        run: Run::Scenario(|| identity_headers(Gateway::Caddy)),
    },
    Attack {
        id: "gateway.nginx-dpop",
        item: 3,
        what: "through docs/nginx.conf, DPoP needs the key's proof for the client's URL",
        run: Run::Scenario(|| dpop_through(Gateway::Nginx)),
    },
    Attack {
        id: "gateway.caddy-dpop",
        item: 3,
        what: "through docs/Caddyfile, DPoP needs the key's proof for the client's URL",
        run: Run::Scenario(|| dpop_through(Gateway::Caddy)),
    },
];
