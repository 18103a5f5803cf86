# SPDX-License-Identifier: Apache-2.0
"""Every YAML example in README.md and docs/ passes `tollgate check`, so no
example a user copies can rot.

A ```yaml block is one of:
  - a tollgate configuration or a part of one (its top-level keys are
    tollgate's): the parts a fragment lacks (listen, upstreams) are added
    from a minimal base, and the whole is checked;
  - a price file (it has `models:`): checked as the `prices:` of a minimal
    configuration;
  - another program's file, named in FOREIGN below with the reason (a
    Prometheus scrape config, say): skipped, and listed in the output so
    the list stays short and deliberate.
A block that is none of these fails the test: add it to FOREIGN with the
reason, or fix the example."""

import glob
import os
import re

import sys
sys.dont_write_bytecode = True  # keep the source tree clean
import tglib  # noqa: E402

# Top-level keys of tollgate's configuration (src/config/config.c).
CONFIG_KEYS = {"listen", "admin", "limits", "upstreams", "ledger", "prices",
               "unknown_models", "attribution", "policies", "timezone",
               "refusals", "alerts", "fleet", "routing", "cache",
               "retry"}

# Blocks that are not tollgate's files: a key each holds, and why.
FOREIGN = {
    "scrape_configs": "a Prometheus scrape configuration",
    "apiVersion": "a Kubernetes manifest (docs/fleet.md's sidecar pod)",
}

BASE_UPSTREAMS = """\
upstreams:
  openai:    { type: openai,    base_url: "https://api.openai.com" }
  anthropic: { type: anthropic, base_url: "https://api.anthropic.com" }
  gemini:    { type: gemini,    base_url: "https://generativelanguage.googleapis.com" }
"""

# Secrets the examples name; check reads them, so they must be set.
SECRET_ENV = {"TOLLGATE_HOOK_SECRET": "example-hook-secret-0123456789",
              "TOLLGATE_ADMIN_TOKEN": "example-admin-token-0123456789abcdef",
              "OPENAI_API_KEY": "sk-example",
              "TOLLGATE_REDIS_PASSWORD": "example-redis-password"}


def yaml_blocks():
    """(file, line, text) of every ```yaml block in README.md and docs/."""
    root = tglib.SOURCE_DIR
    files = [os.path.join(root, "README.md")] + sorted(
        glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    out = []
    for path in files:
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start()) + 2
            out.append((os.path.relpath(path, root), line, m.group(1)))
    return out


def top_keys(text):
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_]+):", text, re.M)}



def config_key_names():
    """Every key name in tollgate's config key tables (src/config/*.c,
    the policies' src/policy/parse.c and the routing rules'
    src/routing/parse.c): KEY_*("name", ...), REQ("name", ...) and
    {.k_name = "name", ...}."""
    root = tglib.SOURCE_DIR
    names = set()
    files = glob.glob(os.path.join(root, "src", "config", "*.c")) + \
        [os.path.join(root, "src", "policy", "parse.c"),
         os.path.join(root, "src", "routing", "parse.c")]
    for path in files:
        with open(path) as f:
            text = f.read()
        names.update(re.findall(
            r'(?:\bKEY_[A-Z]+|\bREQ)\(\s*"([a-z0-9_]+)"', text))
        names.update(re.findall(r'\.k_name\s*=\s*"([a-z0-9_]+)"', text))
    return names


class DocsExamplesTest(tglib.TGTestCase):

    def setUp(self):
        super().setUp()
        for k, v in SECRET_ENV.items():
            os.environ.setdefault(k, v)

    def check(self, text, where):
        rc, out, err, path = tglib.run_check(text, self.tmp,
                                            name="example.yaml")
        self.assertEqual(rc, 0, "%s: `tollgate check` refused the example "
                         "(as completed here):\n%s\n%s%s" %
                         (where, text, out, err))

    def test_every_yaml_example_checks(self):
        blocks = yaml_blocks()
        # The docs have examples: an empty list means the pattern broke.
        self.assertGreaterEqual(len(blocks), 8, blocks)
        checked = skipped = 0
        for path, line, text in blocks:
            where = "%s:%d" % (path, line)
            keys = top_keys(text)
            with self.subTest(example=where):
                foreign = [k for k in FOREIGN if k in keys]
                if foreign:
                    print("skipped %s: %s" % (where, FOREIGN[foreign[0]]))
                    skipped += 1
                    continue
                if "models" in keys:
                    prices = os.path.join(self.tmp, "example-prices.yaml")
                    with open(prices, "w") as f:
                        f.write(text)
                    self.check("listen: 127.0.0.1:0\n" + BASE_UPSTREAMS +
                               "prices: %s\n" % prices, where)
                    checked += 1
                    continue
                unknown = keys - CONFIG_KEYS
                self.assertFalse(unknown, "%s: top-level keys %s are not "
                                 "tollgate's; fix the example or add it to "
                                 "FOREIGN with the reason" %
                                 (where, sorted(unknown)))
                full = text
                if "listen" not in keys:
                    full = "listen: 127.0.0.1:0\n" + full
                if "upstreams" not in keys:
                    full += BASE_UPSTREAMS
                self.check(full, where)
                checked += 1
        self.assertGreater(checked, skipped)

    def test_annotated_config_lists_every_option(self):
        # config/tollgate.yaml says it lists every option: each key the
        # parser knows appears in it as "name:" (set, or in a commented
        # example), and the file as shipped checks.
        names = config_key_names()
        self.assertGreater(len(names), 60, sorted(names))
        path = os.path.join(tglib.SOURCE_DIR, "config", "tollgate.yaml")
        with open(path) as f:
            text = f.read()
        missing = sorted(n for n in names
                         if not re.search(r"(?<![A-Za-z0-9_])%s:" % n, text))
        self.assertEqual(missing, [], "config/tollgate.yaml does not show "
                         "these options: %s" % missing)
        rc, out, err, _ = tglib.run_check(text.replace(
            "prices: prices.yaml", "prices: %s" % os.path.join(
                tglib.SOURCE_DIR, "config", "prices.yaml")), self.tmp)
        self.assertEqual(rc, 0, out + err)


if __name__ == "__main__":
    tglib.main()
