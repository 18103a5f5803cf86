# SPDX-License-Identifier: Apache-2.0
"""Routing on the normalised path only: unknown paths, traversal and
encoded separators get a 404 JSON error and are never forwarded; a known
path with the wrong method gets 405 (or 404); a leading `//v1/...` is read
as `/v1/...`, while a `//` anywhere else is an empty segment and refused;
a model or deployment name in the path that is not a plain name gets a 400
and is never forwarded or recorded; named upstreams select their
upstream."""

import json
import os
import sqlite3

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
from tglib import JSON_CT, new_marker

UNKNOWN = [
    "/v1/files",
    "/v2/chat/completions",
    "/V1/chat/completions",
    "/v1/Chat/Completions",
    "/admin",
    "/passthrough/x",
    "/",
    "/v1",
    "/v1/",
    "/v1/chat/completions/extra",
    "/v1/chat/completionsX",
    "/v1/messages/batches",
    "/v1beta/models/gemini-2.0-flash:deleteEverything",
    "/v1beta/models/gemini-2.0-flash",
    "/v1beta/tunedModels/x:generateContent",
    "/openai/deployments/d/images/generations",
    "/nosuch/v1/chat/completions",
    "/local/admin",
    "/local/local/v1/chat/completions",
    "/v1/spend",
    "/metrics",
    "/healthz",
]

TRAVERSAL = [
    "/v1/chat/completions/../../admin",
    "/v1/chat/completions/..",
    "/v1/../v1/chat/completions",
    "/v1/%2e%2e/messages",
    "/v1/%2E%2E/v1/messages",
    "/v1/chat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "/v1/chat%5Ccompletions",
    "/v1/chat%00/completions",
    "/v1/chat/completions%00",
    "/v1/./chat/completions",
    "/v1/chat/completions/.",
    "/v1/%2e/chat/completions",
    "/v1\\chat\\completions",
    "/local/../v1/chat/completions",
    "/local/%2e%2e/admin",
    "/v1/chat/completions#frag",
    "http://evil.example/v1/chat/completions",
    "*",
]


class RoutesTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        self.tg = self.tollgate(upstreams=tglib.std_upstreams(self.fp.port))

    def refused(self, method, target, statuses):
        body = tglib.openai_chat(new_marker("refused")) \
            if method == "POST" else b""
        raw = tglib.build_request(method, target, body,
                                  [JSON_CT] if body else [])
        r = self.call(self.tg.port, method, target, raw=raw)
        self.assertIn(r.status, statuses, "%s %s: %r" % (method, target, r))
        if r.status in (404, 405):
            try:
                doc = json.loads(r.body)
            except ValueError:
                self.fail("%s %s: %d body is not JSON: %r" %
                          (method, target, r.status, r.body[:200]))
            self.assertIsInstance(doc, dict)
            self.assertIn("error", doc, "%s %s: no error object: %r" %
                          (method, target, doc))
        return r

    def test_unknown_paths_404(self):
        for path in UNKNOWN:
            with self.subTest(path=path):
                self.refused("POST", path, (404,))
        for path in ("/v1/files", "/admin", "/v1/spend"):
            with self.subTest(path=path, method="GET"):
                self.refused("GET", path, (404,))
        self.assertNothingForwarded(self.fp, self.tg)

    def test_traversal_and_encoded_separators_404(self):
        for path in TRAVERSAL:
            with self.subTest(path=path):
                # Absolute-form and '*' targets may be refused as bad
                # requests instead.
                ok = (404,) if path.startswith("/") and "#" not in path \
                    and "\\" not in path else (400, 404)
                self.refused("POST", path, ok)
        self.assertNothingForwarded(self.fp, self.tg)

    def test_wrong_method(self):
        cases = [("GET", "/v1/chat/completions"), ("PUT", "/v1/messages"),
                 ("DELETE", "/v1/chat/completions"), ("POST", "/v1/models"),
                 ("PATCH", "/v1beta/models/m:generateContent"),
                 ("GET", "/v1/embeddings")]
        for method, path in cases:
            with self.subTest(method=method, path=path):
                self.refused(method, path, (405, 404))
        self.assertNothingForwarded(self.fp, self.tg)

    def test_leading_double_slash_normalised(self):
        for target, want, upstream in (
                ("//v1/chat/completions", "/v1/chat/completions", "openai"),
                ("///v1/chat/completions", "/v1/chat/completions", "openai"),
                ("//local/v1/chat/completions", "/v1/chat/completions",
                 "local")):
            with self.subTest(target=target):
                marker = new_marker()
                r = self.call(self.tg.port, "POST", target,
                              tglib.openai_chat(marker), [JSON_CT])
                self.assertEqual(r.status, 200, "%s: %r" % (target, r))
                rec = self.fp.wait_request(marker)
                self.assertIsNotNone(rec, "%s never reached fakeprov" %
                                     target)
                self.assertEqual(rec["path"], want,
                                 "forwarded path is not the normalised one")

    def test_inner_double_slash_refused(self):
        """A `//` past the start is an empty segment: collapsing it would
        move the segments after it, so it is refused, never forwarded."""
        for target in ("/v1//chat/completions",
                       "//local//v1/chat/completions",
                       "/local//v1/chat/completions",
                       "/v1beta/models//gemini-2.0-flash:generateContent",
                       "/v1/chat/completions/"):
            with self.subTest(target=target):
                r = self.refused("POST", target, (404,))
                self.assertIn("empty segment",
                              r.json()["error"]["message"], r)
        self.assertNothingForwarded(self.fp, self.tg)

    def bad_name_tollgate(self):
        """tollgate whose Azure upstream maps a deployment called `chat`
        (what `/openai/deployments//chat/completions` collapsed into), with
        a ledger file the test can read."""
        ups = tglib.std_upstreams(self.fp.port)
        ups["azure"]["deployments"] = {"chat": "gpt-4o-mini",
                                       "prod": "gpt-4o-mini"}
        tg = self.tollgate(upstreams=ups, name="tollgate-names",
                           extra={"ledger": {"path": "data/names.db"}})
        return tg, os.path.join(self.tmp, "data", "names.db")

    def test_bad_names_in_path_refused(self):
        tg, ledger = self.bad_name_tollgate()
        since = self.fp.mark()
        gem = ":generateContent"
        cases = [
            # An empty deployment must not be read as deployment `chat`.
            ("/openai/deployments//chat/completions", "deployment",
             "empty", "openai"),
            ("/openai/deployments//completions", "deployment", "empty",
             "openai"),
            ("/openai/deployments/.x/chat/completions", "deployment",
             "plain name", "openai"),
            ("/openai/deployments/%C0%AE/chat/completions", "deployment",
             "plain name", "openai"),
            ("/v1beta/models/.." + gem, "model", "plain name", "gemini"),
            ("/v1beta/models/." + gem, "model", "plain name", "gemini"),
            ("/v1beta/models/%FF%FE" + gem, "model", "plain name", "gemini"),
            ("/v1beta/models/gemini%C3%A9" + gem, "model", "plain name",
             "gemini"),
            ("/v1beta/models/a%01b" + gem, "model", "plain name", "gemini"),
            ("/v1beta/models/a%0Ab" + gem, "model", "plain name", "gemini"),
            ("/v1beta/models/" + gem, "model", "empty", "gemini"),
            ("/gemini/v1beta/models/.." + gem, "model", "plain name",
             "gemini"),
        ]
        for target, what, text, family in cases:
            with self.subTest(target=target):
                body = tglib.gemini_generate(new_marker("badname")) \
                    if family == "gemini" else \
                    tglib.openai_chat(new_marker("badname"))
                r = self.call(tg.port, "POST", target, body, [JSON_CT])
                self.assertEqual(r.status, 400, "%s: %r" % (target, r))
                doc = r.json()
                msg = doc["error"]["message"]
                self.assertIn("%s name in the path" % what, msg, doc)
                self.assertIn(text, msg, doc)
                if family == "openai":
                    self.assertEqual(doc["error"]["code"], "bad_path", doc)
                else:
                    self.assertEqual(doc["error"]["status"],
                                     "INVALID_ARGUMENT", doc)
        # Percent-encoded dots stay refused as traversal (404).
        for target in ("/v1beta/models/%2e%2e" + gem,
                       "/v1beta/models/%2E" + gem):
            with self.subTest(target=target):
                self.refused("POST", target, (404,))
        self.assertNothingForwarded(self.fp, tg, since)
        # Nothing with those names was recorded.
        c = sqlite3.connect(ledger)
        try:
            models = [row[0] for row in c.execute(
                "SELECT DISTINCT coalesce(model, '') FROM calls")]
        finally:
            c.close()
        self.assertEqual(sorted(models), ["gpt-4o-mini"],
                         "the ledger recorded a refused name: %r" % models)
        # A plain deployment name still routes.
        marker = new_marker()
        r = self.call(tg.port, "POST", "/openai/deployments/prod/chat/"
                      "completions?api-version=2024-10-21",
                      tglib.openai_chat(marker), [JSON_CT])
        self.assertEqual(r.status, 200, r)
        rec = self.fp.wait_request(marker)
        self.assertEqual(rec["path"], "/openai/deployments/prod/chat/"
                         "completions?api-version=2024-10-21")

    def test_named_upstreams_select_upstream(self):
        fp2 = self.fakeprov(name="fakeprov2")
        ups = tglib.std_upstreams(self.fp.port)
        ups["second"] = {"type": "anthropic",
                         "base_url": "http://127.0.0.1:%d" % fp2.port}
        ups["gem2"] = {"type": "gemini",
                       "base_url": "http://127.0.0.1:%d" % fp2.port}
        tg = self.tollgate(upstreams=ups, name="tollgate2")
        cases = [
            ("/second/v1/messages", tglib.anthropic_messages, "/v1/messages",
             fp2, "second"),
            ("/gem2/v1beta/models/gemini-2.0-flash:generateContent",
             tglib.gemini_generate,
             "/v1beta/models/gemini-2.0-flash:generateContent", fp2, "gem2"),
            ("/v1/messages", tglib.anthropic_messages, "/v1/messages",
             self.fp, "anthropic"),
            ("/local/v1/embeddings",
             lambda m: b'{"model":"e","input":"%s"}' % m.encode(),
             "/v1/embeddings", self.fp, "local"),
        ]
        for target, body, want, fp, name in cases:
            with self.subTest(target=target):
                marker = new_marker()
                r = self.call(tg.port, "POST", target, body(marker),
                              [JSON_CT])
                self.assertEqual(r.status, 200, "%s: %r" % (target, r))
                rec = fp.wait_request(marker)
                self.assertIsNotNone(rec, "%s did not reach %s" %
                                     (target, fp.name))
                self.assertEqual(rec["path"], want)
                self.assertTrue(tg.wait_log(r"upstream=%s status=200" % name,
                                            5),
                                "no log line with upstream=%s" % name)


if __name__ == "__main__":
    tglib.main()
