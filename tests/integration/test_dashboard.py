# SPDX-License-Identifier: Apache-2.0
"""The dashboard's serving side on the admin port (docs/dashboard.md): GET
/, /dashboard, /dashboard.js and /dashboard.css need no token, carry a
strict Content-Security-Policy, refuse framing and caching, and reference
nothing outside the admin origin, while every API endpoint still needs the
token; an Origin naming the admin listener itself (what a browser sends on
the page's POST and DELETE) is let through, any other still refused; and
/v1/spend's group_by=hour, checked against the ledger. The page in a real
browser is tests/dashboard/dashboard.test.mjs."""

import os
import re
import unittest

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402
import ledgerlib  # noqa: E402
from tglib import JSON_CT  # noqa: E402
import test_admin  # noqa: E402

TOKEN = test_admin.TOKEN
FILES = {
    "/": "text/html; charset=utf-8",
    "/dashboard": "text/html; charset=utf-8",
    "/dashboard.js": "text/javascript; charset=utf-8",
    "/dashboard.css": "text/css; charset=utf-8",
}
SRC = os.path.join(os.environ.get("TG_SOURCE_DIR", "."), "src", "admin",
                   "dashboard")


class DashboardTest(ledgerlib.MeterTestCase):

    def setUp(self):
        super().setUp()
        self.fp = self.fakeprov()
        extra = ledgerlib.metering_extra()
        extra["admin"] = test_admin.admin_cfg()
        self.tg = self.tollgate(upstreams=ledgerlib.metering_upstreams(
            self.fp.port), extra=extra,
            env={test_admin.TOKEN_ENV: TOKEN})
        m = tglib.wait_until(
            lambda: test_admin.ADMIN_RE.search(self.tg.stderr()), 10)
        self.assertTrue(m, "no 'admin listening on' line")
        self.port = int(m.group(1))
        self.ledger = ledgerlib.Ledger(
            os.path.join(self.tmp, "data/ledger.db"), self.tg)

    def admin(self, method, path, body=b"", headers=(), token=TOKEN,
              host=None):
        hdrs = [("Host", host or "127.0.0.1:%d" % self.port)]
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        hdrs += list(headers)
        raw = tglib.build_request(method, path, body, hdrs, host=None)
        r = self.call(self.port, method, path, raw=raw)
        self.assertEqual(test_admin.no_cors(r), [], r.headers)
        return r

    def test_files_served_without_token(self):
        src = {"/": "index.html", "/dashboard": "index.html",
               "/dashboard.js": "dashboard.js",
               "/dashboard.css": "dashboard.css"}
        for path, ctype in FILES.items():
            for tok in (None, "wrong"):
                with self.subTest(path=path, token=tok):
                    r = self.admin("GET", path, token=tok)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.header("content-type"), ctype)
                    with open(os.path.join(SRC, src[path]), "rb") as f:
                        self.assertEqual(r.body, f.read())
                    csp = r.header("content-security-policy")
                    for d in ("default-src 'none'", "script-src 'self'",
                              "style-src 'self'", "connect-src 'self'",
                              "frame-ancestors 'none'", "base-uri 'none'",
                              "form-action 'none'"):
                        self.assertIn(d, csp)
                    self.assertNotIn("unsafe", csp)
                    self.assertEqual(r.header("x-frame-options"), "DENY")
                    self.assertEqual(r.header("cache-control"), "no-store")
                    self.assertEqual(r.header("x-content-type-options"),
                                     "nosniff")
                    self.assertEqual(r.header("referrer-policy"),
                                     "no-referrer")
        # A query string does not change the file.
        r = self.admin("GET", "/?token=x", token=None)
        self.assertEqual(r.status, 200, r)
        # The log line has the path, never the query.
        self.assertNotIn("token=x", self.tg.stderr())

    def test_no_external_assets(self):
        # Nothing the page loads comes from elsewhere: no absolute URL in
        # src/href, no @import or url() in the style, and the script only
        # ever fetches paths of this origin.
        got = {}
        for path in ("/", "/dashboard.css", "/dashboard.js"):
            r = self.admin("GET", path, token=None)
            self.assertEqual(r.status, 200, r)
            got[path] = r.body.decode()
        html, css, js = got["/"], got["/dashboard.css"], got["/dashboard.js"]
        self.assertIsNone(re.search(r'(src|href)="(?!/|data:)', html))
        self.assertNotIn("@import", css)
        self.assertNotIn("url(", css)
        # Data reaches the DOM as text only: no HTML parsing of strings.
        self.assertIsNone(re.search(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|"
            r"\beval\(|new Function", js))
        for url in re.findall(r"https?://[^'\"\s)]+", js + css + html):
            # The SVG namespace is a name, not a request.
            self.assertEqual(url, "http://www.w3.org/2000/svg")
        for call in re.findall(r"api\('(\w+)', '([^']*)'", js):
            self.assertTrue(call[1].startswith("/v1/"), call)

    def test_api_still_needs_token(self):
        for path in ("/v1/budgets", "/v1/kills", "/v1/spend", "/metrics",
                     "/dashboard/", "/index.html", "/dashboard.json"):
            with self.subTest(path=path):
                r = self.admin("GET", path, token=None)
                self.assertEqual(r.status, 401, r)
        for path in ("/dashboard/", "/index.html", "//", "/dashboard.js/"):
            with self.subTest(path=path):
                self.assertEqual(self.admin("GET", path).status, 404)
        r = self.admin("POST", "/", b"{}", headers=[JSON_CT])
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("allow"), "GET")
        # The Host allowlist holds for the page too (DNS rebinding).
        r = self.admin("GET", "/", token=None, host="evil.com:%d" % self.port)
        self.assertEqual(r.status, 421, r)
        # So does the cross-site refusal: another site cannot even load it.
        for hdr in (("Sec-Fetch-Site", "cross-site"),
                    ("Origin", "http://evil.com")):
            r = self.admin("GET", "/", token=None, headers=[hdr])
            self.assertEqual(r.status, 403, r)

    def test_same_origin_kill_and_lift(self):
        own = "http://127.0.0.1:%d" % self.port
        body = b'{"match":{"team":"alpha"},"reason":"from the page"}'
        refused = [
            [("Origin", "http://localhost:%d" % self.port)],
            [("Origin", "https://127.0.0.1:%d" % self.port)],
            [("Origin", "http://127.0.0.1:%d" % (self.port + 1))],
            [("Origin", own + "/")],
            [("Origin", "null")],
            [("Origin", own), ("Origin", own)],
            [("Origin", own), ("Sec-Fetch-Site", "cross-site")],
            [("Origin", own), ("Sec-Fetch-Site", "same-site")],
        ]
        for hdrs in refused:
            with self.subTest(hdrs=hdrs):
                r = self.admin("POST", "/v1/kills", body,
                               headers=[JSON_CT] + hdrs)
                self.assertEqual(r.status, 403, r)
        self.assertEqual(self.admin("GET", "/v1/kills").json(), {"kills": []})
        # What Chromium sends on the page's own fetch().
        page = [JSON_CT, ("Origin", own), ("Sec-Fetch-Site", "same-origin"),
                ("Sec-Fetch-Mode", "cors")]
        r = self.admin("POST", "/v1/kills", body, headers=page)
        self.assertEqual(r.status, 201, r)
        kill = r.json()
        # The origin must still come with the token.
        r = self.admin("DELETE", "/v1/kills/" + kill["id"], token=None,
                       headers=page[1:])
        self.assertEqual(r.status, 401, r)
        # localhost:PORT as Host with its own origin is the same listener.
        r = self.admin("DELETE", "/v1/kills/" + kill["id"],
                       host="localhost:%d" % self.port,
                       headers=[("Origin", "http://localhost:%d" % self.port),
                                ("Sec-Fetch-Site", "same-origin")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.admin("GET", "/v1/kills").json(), {"kills": []})

    def test_spend_group_by_hour(self):
        for i, team in enumerate(("alpha", "alpha", "beta")):
            m = ledgerlib.marker("hr%d" % i)
            r = self.call(self.tg.port, "POST", "/v1/chat/completions",
                          tglib.openai_chat(m), [
                              JSON_CT, ("X-Tollgate-Agent-Class", "r"),
                              ("X-Tollgate-Team", team)])
            self.assertEqual(r.status, 200, r)
            self.settled_row(r)
        want = {}
        for row in self.ledger.query(
                "SELECT substr(started_at, 1, 13) AS h, team, count(*) AS n,"
                " sum(cost_nusd) AS c FROM calls GROUP BY 1, 2"):
            want[(row["h"] + ":00:00Z", row["team"])] = (row["n"], row["c"])
        r = self.admin("GET", "/v1/spend?group_by=hour,team")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["group_by"], ["hour", "team"])
        got = {(x["hour"], x["team"]): (x["calls"], x["cost_nusd"])
               for x in doc["rows"]}
        self.assertEqual(got, want)
        for hour, _ in want:
            self.assertRegex(hour, r"^\d{4}-\d\d-\d\dT\d\d:00:00Z$")
            # The key is a valid `from`: that hour onwards has the calls
            # of that hour and of any later one (they may straddle one).
            r = self.admin("GET", "/v1/spend?group_by=hour&from=" + hour)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["total_calls"], sum(
                n for (h, _), (n, _c) in want.items() if h >= hour))
        r = self.admin("GET", "/v1/spend?group_by=hour&format=csv")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.body.decode().startswith("hour,"), r.body[:80])
        r = self.admin("GET", "/v1/spend?group_by=minute")
        self.assertEqual(r.status, 400, r)
        self.assertIn("day, month, hour)", r.json()["error"])


if __name__ == "__main__":
    unittest.main()
