import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import test from "node:test";
import { S3AuthError, bodyVerifier, verifySigV4, type SignedRequest } from "../src/s3/sigv4.js";
import { AKID, NOW, enc, lookup, presigned, runThrough, signed, wireQuery } from "./helpers/s3-sign.js";

function fails(code: string, status?: number, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof S3AuthError, `expected S3AuthError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status);
    if (message) assert.match(e.message, message);
    return true;
  };
}

const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const ugly = {
  "list-type": "2",
  prefix: "dir one/sub~dir/a+b c",
  "start-after": "ключ/ü€😀",
  "name with space": "x",
  "ключ": "значение",
  "tilde~": "~",
  empty: "",
  "a/b": "c/d",
};
const uglyPath = "/bucket/" + ["dir one", "ключ é", "a+b~c!(1)*.txt"].map(enc).join("/");

test("a header-signed GET with names and values needing encoding verifies, in the SDK's wire form and in others", async () => {
  const req = await signed({ method: "GET", path: uglyPath, query: ugly, headers: { "x-amz-content-sha256": EMPTY } });
  const v = await verifySigV4(req, lookup, { now: NOW });
  assert.equal(v.accessKeyId, AKID);
  assert.equal(v.region, "us-east-1");
  assert.equal(v.presigned, false);
  assert.deepEqual(v.payload, { kind: "sha256", hex: EMPTY });
  assert.deepEqual(new Map(v.query), new Map(Object.entries(ugly)));

  // The same request as other clients write it: spaces as "+", "~" and "/" left bare, lower-case escapes, another order.
  const loose = Object.entries(ugly)
    .reverse()
    .map(([k, val]) => `${enc(k).replace(/%20/g, "+")}=${enc(val).replace(/%20/g, "+").replace(/%2F/g, "/").toLowerCase().replace(/%7e/g, "%7E")}`)
    .join("&");
  assert.ok(loose.includes("+") && loose.includes("/"));
  const v2 = await verifySigV4({ ...req, rawQuery: loose }, lookup, { now: NOW });
  assert.deepEqual(new Map(v2.query), new Map(Object.entries(ugly)));

  // A path whose reserved characters arrive bare still names the same key.
  const barePath = uglyPath.replace("%21", "!").replace("%28", "(").replace("%29", ")").replace("%2A", "*");
  await verifySigV4({ ...req, rawPath: barePath }, lookup, { now: NOW });

  const tampered = wireQuery({ ...ugly, prefix: "dir one/sub~dir/a+b d" });
  await assert.rejects(verifySigV4({ ...req, rawQuery: tampered }, lookup, { now: NOW }), fails("SignatureDoesNotMatch", 403));
  await assert.rejects(verifySigV4({ ...req, rawPath: uglyPath.replace("bucket", "bucket2") }, lookup, { now: NOW }), fails("SignatureDoesNotMatch"));
  await assert.rejects(verifySigV4({ ...req, method: "DELETE" }, lookup, { now: NOW }), fails("SignatureDoesNotMatch"));
});

test("a raw '+' in the query is read as whatever the signature covered, and the verified pairs say which", async () => {
  const plus = await signed({ method: "GET", path: "/b", query: { prefix: "a+b" }, headers: { "x-amz-content-sha256": EMPTY } });
  const v = await verifySigV4({ ...plus, rawQuery: "prefix=a+b" }, lookup, { now: NOW });
  assert.deepEqual(v.query, [["prefix", "a+b"]]);
  const space = await signed({ method: "GET", path: "/b", query: { prefix: "a b" }, headers: { "x-amz-content-sha256": EMPTY } });
  const w = await verifySigV4({ ...space, rawQuery: "prefix=a+b" }, lookup, { now: NOW });
  assert.deepEqual(w.query, [["prefix", "a b"]]);
});

test("a parameter without '=' has an empty value, and subresources sign as such", async () => {
  const req = await signed({ method: "GET", path: "/bucket", query: { uploads: "", acl: "" }, headers: { "x-amz-content-sha256": EMPTY } });
  const v = await verifySigV4({ ...req, rawQuery: "uploads&acl" }, lookup, { now: NOW });
  assert.deepEqual(v.query, [["uploads", ""], ["acl", ""]]);
});

test("a PUT with a hex payload hash passes its body and fails an altered one", async () => {
  const body = Buffer.from("hello, dfs\n".repeat(1000));
  const req = await signed({ method: "PUT", path: "/bucket/k", body, headers: { "content-type": "text/plain" } });
  const v = await verifySigV4(req, lookup, { now: NOW });
  assert.deepEqual(v.payload, { kind: "sha256", hex: createHash("sha256").update(body).digest("hex") });
  assert.deepEqual(await runThrough(bodyVerifier(v, req), [body.subarray(0, 5000), body.subarray(5000)]), body);
  const altered = Buffer.from(body);
  altered[7] ^= 1;
  await assert.rejects(runThrough(bodyVerifier(v, req), [altered]), fails("XAmzContentSHA256Mismatch", 400));
  await assert.rejects(runThrough(bodyVerifier(v, req), [body.subarray(1)]), fails("XAmzContentSHA256Mismatch"));
});

test("UNSIGNED-PAYLOAD passes any body, but header checksums and Content-MD5 are still checked", async () => {
  const body = Buffer.from("unsigned body");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE((await import("node:zlib")).crc32(body));
  const md5 = createHash("md5").update(body).digest("base64");
  const req = await signed({ method: "PUT", path: "/bucket/u", headers: { "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-checksum-crc32": crc.toString("base64"), "content-md5": md5 } });
  const v = await verifySigV4(req, lookup, { now: NOW });
  assert.deepEqual(v.payload, { kind: "unsigned" });
  assert.deepEqual(await runThrough(bodyVerifier(v, req), [body]), body);
  await assert.rejects(runThrough(bodyVerifier(v, req), [Buffer.from("unsigned bodY")]), fails("BadDigest", 400, /CRC32|Content-MD5/));
  const plain = await signed({ method: "PUT", path: "/bucket/u", headers: { "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "content-md5": md5 } });
  const pv = await verifySigV4(plain, lookup, { now: NOW });
  await assert.rejects(runThrough(bodyVerifier(pv, plain), [Buffer.from("other")]), fails("BadDigest", 400, /Content-MD5/));
  const bad = { ...plain, headers: { ...plain.headers, "content-md5": "nope" } };
  await assert.rejects(runThrough(bodyVerifier(pv, bad), [body]), fails("InvalidDigest", 400));
});

test("a presigned GET verifies until it expires, and a tampered or incomplete query does not", async () => {
  const req = await presigned({ method: "GET", path: "/bucket/" + enc("report 2025.pdf"), query: { "response-content-disposition": "attachment; filename=\"r.pdf\"" } }, 600);
  assert.match(req.rawQuery, /X-Amz-Signature=/);
  const v = await verifySigV4(req, lookup, { now: NOW + 60_000 });
  assert.equal(v.presigned, true);
  assert.deepEqual(v.payload, { kind: "unsigned" });
  assert.ok(v.query.some(([n, val]) => n === "response-content-disposition" && val === "attachment; filename=\"r.pdf\""));
  assert.ok(!v.query.some(([n]) => n === "X-Amz-Signature"));

  await assert.rejects(verifySigV4(req, lookup, { now: NOW + 601_000 }), fails("AccessDenied", 403, /^Request has expired$/));
  await assert.rejects(verifySigV4(req, lookup, { now: NOW - 20 * 60_000 }), fails("AccessDenied", 403, /not valid yet/));
  const longer = req.rawQuery.replace("X-Amz-Expires=600", "X-Amz-Expires=6000");
  assert.notEqual(longer, req.rawQuery);
  await assert.rejects(verifySigV4({ ...req, rawQuery: longer }, lookup, { now: NOW + 601_000 }), fails("SignatureDoesNotMatch", 403));
  const other = req.rawQuery.replace("attachment", "inline");
  await assert.rejects(verifySigV4({ ...req, rawQuery: other }, lookup, { now: NOW }), fails("SignatureDoesNotMatch"));
  await assert.rejects(verifySigV4({ ...req, rawPath: "/bucket/other.pdf" }, lookup, { now: NOW }), fails("SignatureDoesNotMatch"));
  const noSig = req.rawQuery.replace(/&?X-Amz-Signature=[0-9a-f]+/, "");
  await assert.rejects(verifySigV4({ ...req, rawQuery: noSig }, lookup, { now: NOW }), fails("AuthorizationQueryParametersError", 400));
  const week = req.rawQuery.replace("X-Amz-Expires=600", "X-Amz-Expires=604801");
  await assert.rejects(verifySigV4({ ...req, rawQuery: week }, lookup, { now: NOW }), fails("AuthorizationQueryParametersError", 400, /604800/));
  const both: SignedRequest = { ...req, headers: { ...req.headers, authorization: "AWS4-HMAC-SHA256 Credential=x" } };
  await assert.rejects(verifySigV4(both, lookup, { now: NOW }), fails("InvalidArgument", 400));
});

test("a wrong secret, an unknown key, a skewed clock and a region other than ours are refused", async () => {
  const spec = { method: "GET", path: "/bucket", headers: { "x-amz-content-sha256": EMPTY } };
  await assert.rejects(verifySigV4(await signed(spec, { secret: "not-the-secret" }), lookup, { now: NOW }), fails("SignatureDoesNotMatch", 403));
  await assert.rejects(verifySigV4(await signed(spec, { akid: "AKIDNOBODYHAS" }), lookup, { now: NOW }), fails("InvalidAccessKeyId", 403));
  const req = await signed(spec);
  await verifySigV4(req, lookup, { now: NOW + 14 * 60_000 });
  await verifySigV4(req, lookup, { now: NOW - 14 * 60_000 });
  await assert.rejects(verifySigV4(req, lookup, { now: NOW + 16 * 60_000 }), fails("RequestTimeTooSkewed", 403));
  await assert.rejects(verifySigV4(req, lookup, { now: NOW - 16 * 60_000 }), fails("RequestTimeTooSkewed", 403));
  assert.equal((await verifySigV4(req, lookup, { now: NOW, region: "us-east-1" })).region, "us-east-1");
  await assert.rejects(verifySigV4(req, lookup, { now: NOW, region: "eu-west-1" }), fails("AuthorizationHeaderMalformed", 400));
});

test("a missing or malformed Authorization header, and unsigned x-amz headers, are refused with S3's codes", async () => {
  const req = await signed({ method: "GET", path: "/bucket/k", headers: { "x-amz-content-sha256": EMPTY } });
  const auth = String(req.headers.authorization);
  const withAuth = (a: string | undefined): SignedRequest => ({ ...req, headers: { ...req.headers, authorization: a } });
  await assert.rejects(verifySigV4(withAuth(undefined), lookup, { now: NOW }), fails("AccessDenied", 403));
  await assert.rejects(verifySigV4(withAuth(auth.replace(/, Signature=.*/, "")), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed", 400));
  await assert.rejects(verifySigV4(withAuth(auth.replace("Credential=", "Credentials=")), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed"));
  await assert.rejects(verifySigV4(withAuth(auth.replace("/s3/", "/ec2/")), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed", 400, /service/));
  await assert.rejects(verifySigV4(withAuth(auth.replace(/Signature=[0-9a-f]{8}/, "Signature=")), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed"));
  await assert.rejects(verifySigV4(withAuth(auth.replace(/SignedHeaders=[^,]*/, "SignedHeaders=x-amz-date")), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed", 400, /host/));
  await assert.rejects(verifySigV4(withAuth("Bearer abc"), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed"));
  await assert.rejects(verifySigV4(withAuth(`AWS ${AKID}:c2lnbmF0dXJl`), lookup, { now: NOW }), fails("InvalidRequest", 400, /AWS4-HMAC-SHA256/));
  await assert.rejects(verifySigV4(withAuth("AWS4-HMAC-SHA256"), lookup, { now: NOW }), fails("AuthorizationHeaderMalformed"));
  const noSha = { ...req, headers: { ...req.headers, "x-amz-content-sha256": undefined } };
  await assert.rejects(verifySigV4(noSha, lookup, { now: NOW }), fails("InvalidRequest", 400, /x-amz-content-sha256/));
  const extra = { ...req, headers: { ...req.headers, "x-amz-meta-owner": "mallory" } };
  await assert.rejects(verifySigV4(extra, lookup, { now: NOW }), fails("AccessDenied", 403, /x-amz-meta-owner/));
  const noDate = { ...req, headers: { ...req.headers, "x-amz-date": undefined } };
  await assert.rejects(verifySigV4(noDate, lookup, { now: NOW }), fails("AccessDenied", 403));
  const badDate = { ...req, headers: { ...req.headers, "x-amz-date": "20250231T120000Z" } };
  await assert.rejects(verifySigV4(badDate, lookup, { now: NOW }), fails("AccessDenied", 403));
  const badHash = await signed({ method: "GET", path: "/bucket/k", headers: { "x-amz-content-sha256": "SOMETHING" } });
  await assert.rejects(verifySigV4(badHash, lookup, { now: NOW }), fails("InvalidArgument", 400));
});

test("repeated headers and extra whitespace canonicalise as the signer did", async () => {
  const req = await signed({ method: "GET", path: "/bucket/k", headers: { "x-amz-content-sha256": EMPTY, "x-amz-meta-note": "a  b\t c" } });
  assert.equal((await verifySigV4(req, lookup, { now: NOW })).accessKeyId, AKID);
  const two = await signed({ method: "GET", path: "/bucket/k", headers: { "x-amz-content-sha256": EMPTY, "x-amz-meta-list": "one,two" } });
  // As headersDistinct gives a header sent twice.
  const distinct = { ...two, headers: { ...two.headers, "x-amz-meta-list": ["one", "two"] } };
  assert.equal((await verifySigV4(distinct, lookup, { now: NOW })).accessKeyId, AKID);
});
