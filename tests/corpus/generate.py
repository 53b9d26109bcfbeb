#!/usr/bin/env python3
"""Writes the bad-input corpus: requests/<NNN>-<name>.http (the exact bytes sent) and
expected.toml (what each must get back). Every case is defined once, below, in CASES.

    python3 tests/corpus/generate.py          # rewrite requests/ and expected.toml
    python3 tests/corpus/generate.py --check  # exit 1 if the files on disk differ

The runner (test_corpus.py) also checks that the committed files match this script.
See README.md for the manifest format and the status table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUESTS = HERE / "requests"
MANIFEST = HERE / "expected.toml"

# Settings defaults (crates/wharf-settings/src/catalog.rs); the runner uses the defaults.
MAX_BODY_BYTES = 1_048_576
MAX_PATH_BYTES = 10_240
# The one setting the runner changes: CORS_ALLOWED_ORIGINS names this origin only (the default,
# `*`, would leave no origin to refuse).
ALLOWED_ORIGIN = "https://app.corpus.test"
REFUSED_ORIGIN = "https://elsewhere.corpus.test"

ID = "2c3a0767-d84a-4d02-8a92-fa54a3376049"
SUBMIT = f"/submit/corpus-ns/corpus-doc/1/{ID}"
TELEMETRY = f"/submit/telemetry/{ID}/main/Firefox/61.0a1/nightly/20180328030202"
BODY = b'{"corpus": true}'
# Replaced with "corpus-<NNN>" when the file is written: the X-Debug-ID of every submission, so
# the runner can tell which case left which document in Redis.
DEBUG = b"@@CASE@@"


def enc(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def request(
    method: str | bytes = "POST",
    target: str | bytes = SUBMIT,
    body: bytes | None = BODY,
    *,
    version: str = "HTTP/1.1",
    host: bytes | None = b"wharf.test",
    user_agent: bytes | None = b"wharf-corpus/1",
    length: bool = True,
    close: bool = True,
    debug: bool | bytes = True,
    headers: list[tuple[str | bytes, str | bytes]] | None = None,
    eol: bytes = b"\r\n",
) -> bytes:
    """One request, byte for byte. Content-Length is added for a body unless length=False."""
    lines = [enc(method) + b" " + enc(target) + b" " + enc(version)]
    if host is not None:
        lines.append(b"Host: " + host)
    if user_agent is not None:
        lines.append(b"User-Agent: " + user_agent)
    if debug:
        lines.append(b"X-Debug-ID: " + (DEBUG if debug is True else debug))
    for name, value in headers or []:
        lines.append(enc(name) + b": " + enc(value))
    if body is not None and length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close:
        lines.append(b"Connection: close")
    return eol.join(lines) + eol + eol + (body or b"")


def get(target: str, **kw) -> bytes:
    kw.setdefault("debug", False)
    return request("GET", target, None, **kw)


def path(*segments: str | bytes) -> bytes:
    return b"/submit/" + b"/".join(enc(s) for s in segments)


def telemetry(doc_id=ID, doc_type="main", app="Firefox", version="61.0a1", channel="nightly", build="20180328030202"):
    return path("telemetry", doc_id, doc_type, app, version, channel, build)


def generic(namespace="corpus-ns", doc_type="corpus-doc", doc_version="1", doc_id=ID):
    return path(namespace, doc_type, doc_version, doc_id)


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    out = b"".join(f"{len(c):x}".encode() + b"\r\n" + c + b"\r\n" for c in chunks)
    return out + b"0\r\n" + trailer + b"\r\n"


def chunked_request(body: bytes, te: str = "chunked", **kw) -> bytes:
    headers = [("Transfer-Encoding", te)] + kw.pop("headers", [])
    return request(body=body, length=False, headers=headers, **kw)


def with_header_count(total: int, **kw) -> bytes:
    """A request with exactly `total` header fields (filler headers added)."""
    base = request(**kw).split(b"\r\n\r\n")[0].count(b"\r\n")
    fillers = [(f"X-Filler-{i:04d}", "x") for i in range(total - base)]
    return request(headers=fillers, **kw)


@dataclass
class Case:
    name: str
    data: bytes
    expect: list[int]
    why: str
    stores: int = 0
    closes: bool = False
    or_closed: bool = False
    half_close: bool = False
    send_slowly: bool = False
    expect_continue: bool = False
    head: bool = False
    timeout: float | None = None
    headers: list[str] = field(default_factory=list)
    no_headers: list[str] = field(default_factory=list)


CASES: list[Case] = []


def case(name, data, expect, why, **flags) -> None:
    if isinstance(expect, int):
        expect = [expect]
    CASES.append(Case(name, data, list(expect), why, **flags))


def ok(name, data, why, stores=1, **flags) -> None:
    case(name, data, 200, why, stores=stores, **flags)


# ------------------------------------------------------------------ valid controls (200)

ok("valid-generic", request(), "a well-formed generic submission")
ok("valid-put", request("PUT"), "PUT is accepted like POST")
ok("valid-telemetry", request(target=telemetry()), "a well-formed telemetry-form submission")
ok("valid-uppercase-uuid", request(target=generic(doc_id=ID.upper())), "an uppercase hyphenated UUID is a valid docId")
ok("valid-query-string", request(target=SUBMIT + "?v=4&x=1"), "the query string is recorded as args, not validated")
ok("valid-100-char-dimensions", request(target=generic("n" * 100, "t" * 100, "9" * 100)),
   "namespace, docType and docVersion of exactly 100 characters are accepted")
_pad = MAX_PATH_BYTES - len(SUBMIT + "?q=")
ok("valid-path-at-limit", request(target=SUBMIT + "?q=" + "a" * _pad),
   f"path and query of exactly MAX_PATH_BYTES ({MAX_PATH_BYTES}) bytes are accepted")
ok("valid-chunked", chunked_request(chunked(b'{"corpus":', b' "chunked"}')), "a chunked body within the limit")
ok("valid-chunked-extension-trailer",
   chunked_request(b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
   "chunk extensions and trailer fields are allowed by HTTP/1.1 framing")
ok("valid-chunked-uppercase", chunked_request(chunked(b"hello"), te="Chunked"),
   "transfer-coding names are case-insensitive")
ok("valid-sent-slowly", request(), "a complete request arriving in 7-byte pieces", send_slowly=True)
ok("valid-http10-no-host", request(version="HTTP/1.0", host=None, close=False),
   "HTTP/1.0 has no Host requirement; with a Content-Length it is a valid submission")
ok("valid-empty-body", request(body=b""), "Content-Length: 0 is a declared (empty) body")
ok("valid-binary-body", request(body=b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\xff\xfe\r\n\r\n"),
   "the body is opaque bytes (gzip magic, NUL, CRLFs)")
ok("valid-invalid-utf8-ignored-header", request(headers=[("X-Not-Stored", b"caf\xe9 \xff\xfe")]),
   "invalid UTF-8 in a header Wharf does not store is not looked at")
ok("valid-utf8-user-agent", request(user_agent="wharf-corpus/1 caf\u00e9".encode(),
                                   headers=[("X-Pingsender-Version", "1.0"), ("DNT", "1")]),
   "valid UTF-8 (non-ASCII) in a stored header is accepted")
ok("valid-100-headers", with_header_count(100),
   "exactly 100 header fields (the limit) are accepted")
ok("valid-absolute-form", request(target="http://wharf.test" + SUBMIT),
   "absolute-form request target (as sent to a proxy); the path is what is routed")
ok("valid-duplicate-equal-content-length",
   request(headers=[("Content-Length", str(len(BODY)))]),
   "two Content-Length fields with the same value are one length (RFC 9110 8.6)")
ok("valid-leading-crlf", b"\r\n" + request(), "an empty line before the request line is ignored (RFC 9112 2.2)")
ok("valid-expect-unknown", request(headers=[("Expect", "something-else")]),
   "an unknown expectation is ignored; the complete request is served")
ok("valid-http10-expect-continue", request(version="HTTP/1.0", headers=[("Expect", "100-continue")]),
   "Expect: 100-continue means nothing in HTTP/1.0; no interim response")
ok("valid-h2c-upgrade-post",
   request(headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                    ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")], close=False),
   "HTTP/2 is off: the Upgrade is ignored and the POST answered in HTTP/1.1 (never 101)")
case("valid-h2c-upgrade-get", get("/__lbheartbeat__", close=False, headers=[
    ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]),
     200, "HTTP/2 is off: the Upgrade is ignored and the GET answered in HTTP/1.1 (never 101)")

# ------------------------------------------------------------------ Dockerflow (200)

case("dockerflow-get-lbheartbeat", get("/__lbheartbeat__"), 200, "load balancer heartbeat")
case("dockerflow-head-lbheartbeat", request("HEAD", "/__lbheartbeat__", None, debug=False), 200,
     "HEAD is served wherever GET is", head=True)
case("dockerflow-get-heartbeat", get("/__heartbeat__"), 200, "Redis is up: ok or warning (no worker) is 200")
case("dockerflow-head-heartbeat", request("HEAD", "/__heartbeat__", None, debug=False), 200,
     "HEAD is served wherever GET is", head=True)
case("dockerflow-get-version", get("/__version__"), 200, "version object")
case("dockerflow-head-version", request("HEAD", "/__version__", None, debug=False), 200,
     "HEAD is served wherever GET is", head=True)
case("dockerflow-http10-no-host", get("/__lbheartbeat__", version="HTTP/1.0", host=None, close=False), 200,
     "HTTP/1.0 without Host")

# ------------------------------------------------------------------ unknown routes, segment counts (404)

case("route-unknown-get", get("/nope"), 404, "unknown route")
case("route-unknown-post", request(target="/nope"), 404, "unknown route")
case("route-submit-bare", request(target="/submit"), 404, "/submit alone is no submission URL")
case("route-submit-slash", request(target="/submit/"), 404, "no namespace")
case("route-uppercase-submit", request(target="/SUBMIT/corpus-ns/corpus-doc/1/" + ID), 404,
     "paths are case-sensitive")
case("route-submit-prefix", request(target="/submitx/corpus-ns/corpus-doc/1/" + ID), 404,
     "/submitx is not /submit")
case("segments-namespace-only", request(target=path("corpus-ns")), 404, "1 segment; generic needs 4")
case("segments-too-few", request(target=path("corpus-ns", "corpus-doc", "1")), 404, "3 segments; generic needs 4")
case("segments-too-many", request(target=path("corpus-ns", "corpus-doc", "1", ID, "extra")), 404,
     "5 segments; generic needs 4")
case("segments-telemetry-generic-form", request(target=path("telemetry", "main", "4", ID)), 404,
     "telemetry needs the 7-segment form")
case("segments-telemetry-too-few", request(target=path("telemetry", ID, "main", "Firefox", "61.0a1", "nightly")),
     404, "telemetry with 6 segments")
case("segments-telemetry-too-many", request(target=telemetry() + b"/extra"), 404, "telemetry with 8 segments")
case("segments-generic-telemetry-form",
     request(target=path("corpus-ns", ID, "main", "Firefox", "61.0a1", "nightly", "20180328030202")), 404,
     "the telemetry form is only for the telemetry namespace")

# ------------------------------------------------------------------ encoded slashes (400)

_slash_id = ID.replace("-", "%2F", 1)
for _name, _target in [
    ("namespace", generic(namespace="corpus%2Fns")),
    ("doctype", generic(doc_type="corpus%2fdoc")),
    ("docversion", generic(doc_version="1%2F2")),
    ("docid", generic(doc_id=_slash_id)),
    ("docid-trailing", generic(doc_id=ID + "%2F")),
    ("telemetry-docid", telemetry(doc_id=ID + "%2f")),
    ("telemetry-doctype", telemetry(doc_type="ma%2Fin")),
    ("telemetry-appname", telemetry(app="Fire%2Ffox")),
    ("telemetry-appversion", telemetry(version="61.0%2Fa1")),
    ("telemetry-channel", telemetry(channel="night%2fly")),
    ("telemetry-buildid", telemetry(build="2018%2F0328030202")),
]:
    case(f"encoded-slash-{_name}", request(target=_target), 400,
         "a percent-encoded slash is not a dimension character")

# ------------------------------------------------------------------ dot segments (400)

for _name, _target in [
    ("namespace-dot", generic(namespace=".")),
    ("namespace-dotdot", generic(namespace="..")),
    ("doctype-dotdot", generic(doc_type="..")),
    ("docversion-dot", generic(doc_version=".")),
    ("doctype-encoded-dotdot", generic(doc_type="%2E%2E")),
    ("docversion-encoded-dotdot-lower", generic(doc_version="%2e%2e")),
    ("namespace-half-encoded", generic(namespace=".%2E")),
    ("docid-dotdot", generic(doc_id="..")),
    ("telemetry-appname-dotdot", telemetry(app="..")),
    ("telemetry-channel-dot", telemetry(channel=".")),
    ("telemetry-appversion-encoded-dotdot", telemetry(version="%2E%2E")),
    ("telemetry-buildid-dotdot", telemetry(build="..")),
]:
    case(f"dot-segment-{_name}", request(target=_target), 400, "'.' and '..' (also encoded) are refused segments")

# ------------------------------------------------------------------ unicode (400)

for _name, _target, _why in [
    ("raw-namespace", generic(namespace="caf\u00e9".encode()), "raw UTF-8 bytes in the request target"),
    ("raw-doctype", generic(doc_type="\u6587\u66f8".encode()), "raw UTF-8 bytes in the request target"),
    ("raw-telemetry-appname", telemetry(app="Fir\u00e9fox".encode()), "raw UTF-8 bytes in the request target"),
    ("raw-invalid-byte-telemetry-appname", telemetry(app=b"Fire\xfffox"), "a raw byte that is not UTF-8 in the path"),
    ("encoded-doctype", generic(doc_type="caf%C3%A9"), "percent-encoded UTF-8 in a dimension"),
    ("encoded-telemetry-appname", telemetry(app="Fir%C3%A9fox"), "percent-encoded UTF-8 in a telemetry segment"),
    ("encoded-docid-fullwidth", generic(doc_id="%EF%BC%92" + ID[1:]), "percent-encoded fullwidth digit in the docId"),
]:
    case(f"unicode-{_name}", request(target=_target), 400, _why)

ok("unicode-raw-query", request(target=(SUBMIT + "?q=").encode() + "\u00e9".encode()),
   "raw UTF-8 in the query string: the query is not validated, it is recorded as the args attribute")
case("unicode-raw-invalid-byte-query", request(target=(SUBMIT + "?q=").encode() + b"\xff\xfe"), 400,
     "raw bytes that are not UTF-8 in the query string cannot be recorded as text")

# ------------------------------------------------------------------ NUL (400)

case("nul-raw-path", request(target=generic(doc_type=b"corpus\x00doc")), 400, "raw NUL in the request target",
     closes=True, or_closed=True)
case("nul-encoded-doctype", request(target=generic(doc_type="corpus%00doc")), 400, "%00 in a dimension")
case("nul-encoded-docid", request(target=generic(doc_id=ID + "%00")), 400, "%00 after the docId")
case("nul-encoded-telemetry-buildid", request(target=telemetry(build="2018%00")), 400, "%00 in a telemetry segment")
case("nul-raw-header-value", request(headers=[("X-Not-Stored", b"a\x00b")], close=False), 400,
     "raw NUL in a header value is not a valid field value", closes=True, or_closed=True)

# ------------------------------------------------------------------ overlong (400 / 414)

for _name, _target in [
    ("namespace", generic(namespace="n" * 101)),
    ("doctype", generic(doc_type="t" * 101)),
    ("docversion", generic(doc_version="9" * 101)),
    ("telemetry-doctype", telemetry(doc_type="m" * 101)),
    ("telemetry-appname", telemetry(app="F" * 101)),
    ("telemetry-buildid", telemetry(build="2" * 101)),
]:
    case(f"overlong-segment-{_name}", request(target=_target), 400, "a 101-character segment (limit 100)")
case("overlong-path-query-by-one", request(target=SUBMIT + "?q=" + "a" * (_pad + 1)), 414,
     f"path and query one byte over MAX_PATH_BYTES ({MAX_PATH_BYTES})")
case("overlong-path-many-segments", request(target="/submit/" + "/".join(["s" * 99] * 104)), 414,
     "a path of 104 segments, over MAX_PATH_BYTES before any segment is looked at")
case("overlong-path-70k", request(target=SUBMIT + "?q=" + "a" * 70_000, close=False), 431,
     "a 70,000-byte request line does not fit the 64 KiB read buffer: hyper answers before any routing",
     closes=True, or_closed=True)

# ------------------------------------------------------------------ empty segments (400)

for _name, _target in [
    ("namespace", b"/submit//corpus-doc/1/" + ID.encode()),
    ("doctype", generic(doc_type="")),
    ("docversion", generic(doc_version="")),
    ("docid", generic(doc_id="")),
    ("before-docid", path("corpus-ns", "corpus-doc", "1", "", ID)),
    ("trailing-slash", generic() + b"/"),
    ("telemetry-appname", telemetry(app="")),
    ("telemetry-double-slash", telemetry(version="61.0a1/")),
]:
    case(f"empty-segment-{_name}", request(target=_target), 400, "an empty segment ('//' or a trailing '/')")

# ------------------------------------------------------------------ docId shapes (400)

for _name, _doc_id, _why in [
    ("too-short", ID[:-1], "35 characters"),
    ("too-long", ID + "0", "37 characters"),
    ("simple-32-hex", ID.replace("-", ""), "32-hex simple form is refused; only the hyphenated form"),
    ("braced", "{" + ID + "}", "braced form is refused"),
    ("braced-encoded", "%7B" + ID + "%7D", "percent-encoded braced form is refused"),
    ("urn", "urn:uuid:" + ID, "urn:uuid: form is refused"),
    ("non-hex", ID.replace("a", "g"), "non-hex characters"),
    ("wrong-hyphens", ID[:7] + "-" + ID[7] + ID[9:], "hyphens in the wrong places"),
    ("extra-hyphen", ID[:-1] + "-", "a hyphen where a hex digit belongs"),
    ("all-hyphens", "-" * 36, "36 hyphens"),
    ("trailing-space-encoded", ID + "%20", "a trailing encoded space"),
    ("leading-space-encoded", "%20" + ID, "a leading encoded space"),
    ("not-a-uuid", "not-a-uuid", "a word"),
]:
    case(f"docid-{_name}", request(target=generic(doc_id=_doc_id)), 400, f"docId: {_why}")
case("docid-trailing-space-raw", request(target=SUBMIT + " "), 400,
     "a raw space after the target breaks the request line", closes=True, or_closed=True)
case("docid-telemetry-simple-form", request(target=telemetry(doc_id=ID.replace("-", ""))), 400,
     "telemetry docId in the 32-hex simple form")

# ------------------------------------------------------------------ methods

for _method in ["GET", "HEAD", "DELETE", "PATCH", "TRACE", "OPTIONS", "CONNECT", "FOO", "post"]:
    _body = None if _method in ("GET", "HEAD", "TRACE", "OPTIONS", "CONNECT") else BODY
    _why = {
        "post": "post on a valid submission path (methods are case-sensitive)",
        "OPTIONS": "OPTIONS on a valid submission path without Origin: not a CORS preflight",
    }.get(_method, f"{_method} on a valid submission path")
    case(f"method-submit-{_method.lower()}" + ("-lowercase" if _method == "post" else ""),
         request(_method, SUBMIT, _body), 405, _why, head=_method == "HEAD")
for _method in ["POST", "DELETE", "PATCH", "TRACE", "OPTIONS", "CONNECT", "FOO"]:
    _body = BODY if _method in ("POST", "PATCH") else None
    case(f"method-lbheartbeat-{_method.lower()}", request(_method, "/__lbheartbeat__", _body, debug=False), 405,
         f"{_method} on a GET-only Dockerflow endpoint")
for _method in ["TRACE", "FOO", "DELETE"]:
    case(f"method-unknown-path-{_method.lower()}", request(_method, "/nope", None, debug=False), 404,
         f"{_method} on an unknown path: the fallback answers every method")
case("method-connect-authority-form", request("CONNECT", "wharf.test:443", None, debug=False), 404,
     "CONNECT host:port: no proxying; routed as an empty path to the 404 fallback")
case("method-options-asterisk", request("OPTIONS", "*", None, debug=False), 404,
     "OPTIONS * (asterisk-form): no route")

# ------------------------------------------------------------------ Content-Length

case("cl-two-different", request(headers=[("Content-Length", "6")], close=False), 400,
     "two Content-Length fields with different values", closes=True)
case("cl-list-different", request(length=False, headers=[("Content-Length", "5, 6")], close=False), 400, "a Content-Length list with different values", closes=True)
case("cl-negative", request(length=False, headers=[("Content-Length", "-1")], close=False), 400,
     "negative Content-Length", closes=True)
case("cl-non-numeric", request(length=False, headers=[("Content-Length", "sixteen")], close=False), 400,
     "non-numeric Content-Length", closes=True)
case("cl-plus-sign", request(length=False, headers=[("Content-Length", "+16")], close=False), 400,
     "a sign is not part of a Content-Length", closes=True)
case("cl-hex", request(length=False, headers=[("Content-Length", "0x10")], close=False), 400,
     "Content-Length is decimal", closes=True)
case("cl-overflow-u64", request(length=False, headers=[("Content-Length", "18446744073709551616")], close=False),
     400,
     "a Content-Length past 2^64-1 cannot be a length", closes=True)
case("cl-huge", request(body=None, headers=[("Content-Length", "1000000000000000")]), 413,
     "a valid but huge Content-Length is over MAX_BODY_BYTES (answered before any body is sent)")
case("cl-over-limit-by-one", request(body=None, headers=[("Content-Length", str(MAX_BODY_BYTES + 1))]), 413,
     "Content-Length of MAX_BODY_BYTES + 1 (answered before any body is sent)")
case("cl-missing-post", request(length=False), 411, "POST with a body but no Content-Length and not chunked")
case("cl-missing-put", request("PUT", body=None), 411, "PUT without Content-Length and not chunked")
case("cl-lying-more-half-close", request(body=None, headers=[("Content-Length", "100")]) + BODY, 400,
     "declares 100 bytes, sends 16, then half-closes: 400 or a closed connection",
     half_close=True, or_closed=True, timeout=3.0)
case("cl-lying-less", request(body=None, close=False, headers=[("Content-Length", "5")])
     + b'{"corpus": true}\r\n\r\n', [200, 400],
     "declares 5 bytes of a longer body: the rest is parsed as a second request, which is garbage",
     stores=1, closes=True)
case("cl-stalled-body", request(body=None, close=False, headers=[("Content-Length", "100")]) + BODY, 503,
     "the body stops arriving: 503 with Retry-After after BODY_TIMEOUT_MS (never 408)",
     timeout=4.0, headers=["retry-after"])

# ------------------------------------------------------------------ chunked

_limit_chunks = [b"a" * 65_536] * (MAX_BODY_BYTES // 65_536) + [b"b"]
case("chunked-over-limit", chunked_request(chunked(*_limit_chunks)), 413,
     "chunked body of MAX_BODY_BYTES + 1 bytes", timeout=10.0)
case("chunked-bad-size", chunked_request(b"zz\r\nhello\r\n0\r\n\r\n", close=False), 400,
     "chunk size is not hex", closes=True, or_closed=True)
case("chunked-size-overflow", chunked_request(b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n", close=False), 400,
     "chunk size overflows", closes=True, or_closed=True)
case("chunked-negative-size", chunked_request(b"-5\r\nhello\r\n0\r\n\r\n", close=False), 400,
     "negative chunk size", closes=True, or_closed=True)
case("chunked-hex-prefix", chunked_request(b"0x5\r\nhello\r\n0\r\n\r\n", close=False), 400,
     "chunk size with a 0x prefix", closes=True, or_closed=True)
case("chunked-data-longer-than-size", chunked_request(b"3\r\nhello\r\n0\r\n\r\n", close=False), 400,
     "chunk data longer than its size (no CRLF where one must be)", closes=True, or_closed=True)
case("chunked-missing-last-chunk-half-close", chunked_request(b"5\r\nhello\r\n"), 400,
     "no last chunk, then half-close: 400 or a closed connection", half_close=True, or_closed=True, timeout=3.0)
case("chunked-stalled", chunked_request(b"5\r\nhello\r\n", close=False), 503,
     "chunked body stops arriving: 503 with Retry-After after BODY_TIMEOUT_MS",
     timeout=4.0, headers=["retry-after"])

# ------------------------------------------------------------------ Transfer-Encoding

case("te-and-cl", request(headers=[("Transfer-Encoding", "chunked")], body=chunked(b"hello"), close=False), 400,
     "both Content-Length and Transfer-Encoding (the smuggling shape): refused, and the connection closed "
     "(RFC 9112 6.1)", closes=True)
case("te-and-cl-te-first", request(length=False, body=chunked(b"hello"), close=False,
                                   headers=[("Transfer-Encoding", "chunked"), ("Content-Length", "10")]), 400,
     "both Transfer-Encoding and Content-Length, TE first: refused, and the connection closed", closes=True)
case("te-and-cl-after-pipelined",
     request(close=False) + chunked_request(chunked(b"hello"), close=False)
     + request(headers=[("Transfer-Encoding", "chunked")], body=chunked(b"hello"), close=False),
     [200, 200, 400],
     "the third request of a pipeline is framed both ways: the two before it are served, it is refused",
     closes=True, stores=2)
case("te-gzip", chunked_request(b"hello", te="gzip", close=False), 400,
     "Transfer-Encoding other than chunked", closes=True, or_closed=True)
case("te-identity", chunked_request(b"hello", te="identity", close=False), 400,
     "Transfer-Encoding: identity is not a transfer coding", closes=True, or_closed=True)
case("te-chunked-then-gzip", chunked_request(chunked(b"hello"), te="chunked, gzip", close=False), 400,
     "chunked is not the final coding", closes=True, or_closed=True)
case("te-gzip-then-chunked", chunked_request(chunked(b"hello"), te="gzip, chunked", close=False), 400,
     "a transfer coding other than chunked (gzip) is not supported", closes=True, or_closed=True)
case("te-http10-chunked", chunked_request(chunked(b"hello"), version="HTTP/1.0", close=False), 400,
     "Transfer-Encoding in an HTTP/1.0 request", closes=True, or_closed=True)

# ------------------------------------------------------------------ header block (431 / 400)

case("headers-1000", with_header_count(1000, close=False), 431, "1,000 header fields (limit 100)",
     closes=True, or_closed=True)
case("headers-101", with_header_count(101, close=False), 431, "101 header fields (limit 100)",
     closes=True, or_closed=True)
case("headers-64k-value", request(headers=[("X-Big", "v" * 65_536)], close=False), 431,
     "one 64 KiB header: the header block is bigger than the read buffer", closes=True, or_closed=True)
case("headers-no-colon", request(headers=[("X-No-Colon-Here", "")]).replace(b"X-No-Colon-Here: ", b"X-No-Colon-Here"),
     400, "a header line without a colon", closes=True, or_closed=True)
case("headers-space-before-colon", request().replace(b"User-Agent:", b"User-Agent :"), 400,
     "whitespace between field name and colon (RFC 9112 5.1)", closes=True, or_closed=True)
case("headers-obs-fold", request(user_agent=b"wharf-corpus/1\r\n folded"),
     400, "obsolete line folding", closes=True, or_closed=True)
for _header, _value in [
    ("User-Agent", b"Mozilla/5.0 \xff\xfe"),
    ("X-Debug-ID", DEBUG + b"-\xc3\x28"),
    ("Date", b"Tue, 01 Dec 2026 03:37:15 GMT\x80"),
    ("Host", b"wharf.\xe9test"),
    ("X-Forwarded-For", b"203.0.113.9\xff"),
]:
    if _header == "User-Agent":
        _data = request(user_agent=_value)
    elif _header == "X-Debug-ID":
        _data = request(debug=_value)
    elif _header == "Host":
        _data = request(host=_value)
    else:
        _data = request(headers=[(_header, _value)])
    case(f"header-invalid-utf8-{_header.lower()}", _data, 400,
         f"invalid UTF-8 in {_header}, a header stored as an attribute")

# ------------------------------------------------------------------ Host

case("host-missing-http11", request(host=None), 400, "HTTP/1.1 without Host (RFC 9112 3.2)")
case("host-twice-http11", request(headers=[("Host", "other.test")]), 400,
     "HTTP/1.1 with two Host fields (RFC 9112 3.2)")

# ------------------------------------------------------------------ pipelining

case("pipeline-three",
     request(close=False) + get("/nope", close=False) + request("PUT"),
     [200, 404, 200], "three requests in one write are answered in order", stores=2)
case("pipeline-with-rejections",
     request(target=generic(doc_id="not-a-uuid"), body=b"", close=False) + request("GET", SUBMIT, None, close=False)
     + request(), [400, 405, 200], "rejections in a pipeline do not disturb the requests after them", stores=1)
case("pipeline-dockerflow", get("/__lbheartbeat__", close=False) + get("/__version__", close=False)
     + get("/__lbheartbeat__"), [200, 200, 200], "three Dockerflow GETs in one write")

# ------------------------------------------------------------------ Expect: 100-continue

case("expect-continue-valid", request(headers=[("Expect", "100-continue")]), [100, 200],
     "interim 100 Continue, then the body is read and stored", stores=1, expect_continue=True)
case("expect-continue-over-limit",
     request(body=None, headers=[("Expect", "100-continue"), ("Content-Length", str(MAX_BODY_BYTES + 1))]),
     413, "an over-limit Content-Length is refused without a 100 Continue", expect_continue=True)
case("expect-continue-bad-path", request(target=generic(doc_id="not-a-uuid"), headers=[("Expect", "100-continue")]),
     400, "a bad path is refused without a 100 Continue", expect_continue=True)

# ------------------------------------------------------------------ HTTP/2 and other protocol versions

case("h2-prior-knowledge-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [],
     "HTTP/2 is off: hyper recognises the prior-knowledge preface and closes without an HTTP/1.1 answer",
     closes=True)
case("version-http-1-2", request(version="HTTP/1.2", close=False), 400, "HTTP/1.2 is not a version hyper parses",
     closes=True, or_closed=True)
case("version-http-2-0-post", request(version="HTTP/2.0", close=False), 400,
     "an HTTP/1-framed request claiming HTTP/2.0", closes=True, or_closed=True)
case("version-missing-http09", b"GET /__lbheartbeat__\r\n\r\n", 400, "an HTTP/0.9-style request line",
     closes=True, or_closed=True)

# ------------------------------------------------------------------ garbage and odd request lines

case("garbage-tls-client-hello",
     b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\x00\x00\x02\x13\x01\x01\x00",
     400, "a TLS ClientHello on the plain-HTTP port", closes=True, or_closed=True, half_close=True, timeout=3.0)
case("garbage-nothing-then-half-close", b"", [], "connect and half-close at once: closed without an answer",
     half_close=True, closes=True, timeout=3.0)
case("garbage-request-line-only-half-close", b"POST " + SUBMIT.encode() + b" HTTP/1.1\r\n", [],
     "an unfinished header block then half-close: closed (or 400)", half_close=True, closes=True, or_closed=True,
     timeout=3.0)
case("garbage-target-no-slash", request(target="submit/corpus-ns/corpus-doc/1/" + ID), 400,
     "origin-form target without the leading slash", closes=True, or_closed=True)
case("garbage-tab-in-target", request(target=generic(doc_type=b"corpus\tdoc")), 400,
     "a tab in the request target", closes=True, or_closed=True)
case("garbage-percent-invalid", request(target=generic(doc_type="corpus%zzdoc")), 400,
     "an invalid percent-encoding in a dimension")
case("garbage-double-encoded-slash", request(target=generic(doc_type="corpus%252Fdoc")), 400,
     "a double-encoded slash in a dimension")
case("garbage-semicolon-params", request(target=generic(doc_type="corpus;x=1")), 400,
     "path parameters (';') in a dimension")
case("garbage-backslash", request(target=generic(doc_type="corpus\\doc")), 400,
     "a backslash in a dimension", or_closed=True)

# ------------------------------------------------------------------ CORS (browsers)

_PREFLIGHT = [("Access-Control-Request-Method", "POST"),
              ("Access-Control-Request-Headers", "content-type, x-debug-id, x-source-tags")]
_CORS = ["access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
         "access-control-max-age"]
case("cors-preflight-allowed",
     request("OPTIONS", SUBMIT, None, debug=False, headers=[("Origin", ALLOWED_ORIGIN)] + _PREFLIGHT), 204,
     "a preflight from an allowed origin: 204 with the origin, methods, headers and max age",
     headers=_CORS + ["vary"])
case("cors-preflight-allowed-telemetry",
     request("OPTIONS", telemetry(), None, debug=False, headers=[("Origin", ALLOWED_ORIGIN)] + _PREFLIGHT), 204,
     "a preflight for a telemetry-form URL", headers=_CORS)
case("cors-preflight-refused-origin",
     request("OPTIONS", SUBMIT, None, debug=False, headers=[("Origin", REFUSED_ORIGIN)] + _PREFLIGHT), 403,
     "a preflight from an origin not in CORS_ALLOWED_ORIGINS: 403 without CORS headers", no_headers=_CORS)
ok("cors-post-allowed-origin",
   request(headers=[("Origin", ALLOWED_ORIGIN), ("Content-Type", "text/plain;charset=UTF-8")]),
   "a sendBeacon-shaped POST (text/plain, never preflighted) from an allowed origin: stored, and the "
   "answer names the origin", headers=["access-control-allow-origin", "vary"])
case("cors-post-allowed-origin-bad-path",
     request(target=generic(doc_id="not-a-uuid"), headers=[("Origin", ALLOWED_ORIGIN)]), 400,
     "a refusal of an allowed origin's request still names the origin, so the page reads the 400",
     headers=["access-control-allow-origin"])
case("cors-post-allowed-origin-too-large",
     request(body=None, headers=[("Origin", ALLOWED_ORIGIN), ("Content-Length", str(MAX_BODY_BYTES + 1))]), 413,
     "an over-limit body from an allowed origin: 413 naming the origin", headers=["access-control-allow-origin"])
case("cors-post-refused-origin",
     request(headers=[("Origin", REFUSED_ORIGIN), ("Content-Type", "text/plain;charset=UTF-8")]), 403,
     "a simple POST from an origin not allowed: refused before the body is read, nothing stored",
     no_headers=["access-control-allow-origin"])
case("cors-post-null-origin", request(headers=[("Origin", "null")]), 403,
     "Origin: null (a sandboxed or file: page) is not in the list", no_headers=["access-control-allow-origin"])
case("cors-preflight-dockerflow",
     request("OPTIONS", "/__heartbeat__", None, debug=False, headers=[("Origin", ALLOWED_ORIGIN)] + _PREFLIGHT),
     405, "CORS covers /submit only: a preflight elsewhere keeps the method's 405", no_headers=_CORS)
case("cors-preflight-unknown-path",
     request("OPTIONS", "/nope", None, debug=False, headers=[("Origin", ALLOWED_ORIGIN)] + _PREFLIGHT),
     404, "CORS covers /submit only: a preflight to an unknown path is the fallback's 404", no_headers=_CORS)


# ------------------------------------------------------------------ output


def render(c: Case, number: int) -> tuple[str, bytes]:
    stem = f"{number:03d}-{c.name}"
    return f"{stem}.http", c.data.replace(DEBUG, f"corpus-{number:03d}".encode())


def toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def manifest_text() -> str:
    out = [
        "# Generated by tests/corpus/generate.py; edit that script, then run it. Format: README.md.",
        f"# {len(CASES)} cases.",
        "",
    ]
    for number, c in enumerate(CASES, start=1):
        file, _ = render(c, number)
        out.append("[[case]]")
        out.append(f"file = {toml_string(file)}")
        out.append(f"expect = [{', '.join(str(s) for s in c.expect)}]")
        out.append(f"why = {toml_string(c.why)}")
        if c.stores:
            out.append(f"stores = {c.stores}")
        for flag in ("closes", "or_closed", "half_close", "send_slowly", "expect_continue", "head"):
            if getattr(c, flag):
                out.append(f"{flag} = true")
        if c.timeout is not None:
            out.append(f"timeout = {c.timeout}")
        if c.headers:
            out.append(f"headers = [{', '.join(toml_string(h) for h in c.headers)}]")
        if c.no_headers:
            out.append(f"no_headers = [{', '.join(toml_string(h) for h in c.no_headers)}]")
        out.append("")
    return "\n".join(out)


def expected_files() -> dict[str, bytes]:
    files = {f"requests/{name}": data for name, data in (render(c, n) for n, c in enumerate(CASES, start=1))}
    files["expected.toml"] = manifest_text().encode()
    return files


def differences() -> list[str]:
    want = expected_files()
    have = {f"requests/{p.name}": p.read_bytes() for p in REQUESTS.glob("*.http")} if REQUESTS.exists() else {}
    if MANIFEST.exists():
        have["expected.toml"] = MANIFEST.read_bytes()
    diffs = [f"missing or different: {k}" for k, v in want.items() if have.get(k) != v]
    diffs += [f"not generated by generate.py: {k}" for k in have if k not in want]
    return sorted(diffs)


def main() -> int:
    names = [c.name for c in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        print(f"duplicate case names: {sorted(dupes)}", file=sys.stderr)
        return 1
    if "--check" in sys.argv[1:]:
        diffs = differences()
        for d in diffs:
            print(d, file=sys.stderr)
        return 1 if diffs else 0
    REQUESTS.mkdir(exist_ok=True)
    want = expected_files()
    for old in REQUESTS.glob("*.http"):
        if f"requests/{old.name}" not in want:
            old.unlink()
    for rel, data in want.items():
        (HERE / rel).write_bytes(data)
    print(f"wrote {len(CASES)} cases to {REQUESTS.relative_to(HERE.parents[1])} and {MANIFEST.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
