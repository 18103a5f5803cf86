/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The alerts: section: the webhooks every alert is delivered to and how
 * deliveries are retried. A webhook's URL is http or https and may carry
 * a token in its path (Slack's do), so it is never echoed in a message;
 * its signing secret comes from an environment variable (secret_env),
 * never from the YAML, and is wiped when the config is freed. Defaults
 * and the whole-section checks (initial_backoff <= max_backoff) are here
 * too; src/alerts/ reads the result on start-up and every reload.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "cfg.h"

#define ALERTS_WEBHOOKS_MAX 16
#define ALERTS_URL_MAX 2048
#define ALERTS_BACKOFF_MAX_MS (24 * 3600 * 1000L)

#define WH_OFF(f) offsetof(struct webhook_conf, f)
#define CF_OFF(f) offsetof(struct config, f)

static void cfgp_webhooks(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_webhook_url(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_webhook_format(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_webhook_secret_env(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey webhook_keys[] = {
    KEY_CALL("url", cfgp_webhook_url, 0, CFGKEY_REQUIRED),
    KEY_CALL("format", cfgp_webhook_format, WH_OFF(wh_format), 0),
    KEY_CALL("secret_env", cfgp_webhook_secret_env, 0, 0),
    KEY_DURATION("timeout", WH_OFF(wh_timeout_ms)),
    KEY_END,
};

static const struct cfgkey retry_keys[] = {
    KEY_INT("max_attempts", CF_OFF(cf_alert_max_attempts), 1, 100),
    KEY_DURATION("initial_backoff", CF_OFF(cf_alert_initial_backoff_ms)),
    KEY_DURATION("max_backoff", CF_OFF(cf_alert_max_backoff_ms)),
    KEY_END,
};

static const struct cfgkey alerts_keys[] = {
    KEY_CALL("webhooks", cfgp_webhooks, 0, 0),
    KEY_SECTION("retry", retry_keys),
    KEY_END,
};

/* The defaults docs/configuration.md documents. */
void
config_defaults_alerts(struct config *cf)
{
	cf->cf_alert_max_attempts = 10;
	cf->cf_alert_initial_backoff_ms = 1000;
	cf->cf_alert_max_backoff_ms = 60 * 1000;
}

/* alerts: a section of alerts_keys, stored into the struct config. */
void
cfgp_alerts(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	cfg_apply(cx, alerts_keys, path, n, n, dst);
}

/* alerts.webhooks: a list of mappings of webhook_keys. */
static void
cfgp_webhooks(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct webhook_conf *wh;
	const struct ynode *item;
	char where[CFG_PATH_MAX];
	size_t i;

	(void)k;
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of webhooks", path);
		return;
	}
	if (n->yn_nkids > ALERTS_WEBHOOKS_MAX) {
		cfg_error(cx, n, "%s: at most %d webhooks", path,
		    ALERTS_WEBHOOKS_MAX);
		return;
	}
	if (n->yn_nkids == 0)
		return;
	cf->cf_webhooks = xcalloc(n->yn_nkids, sizeof(*cf->cf_webhooks));
	for (i = 0; i < n->yn_nkids; i++) {
		item = n->yn_kids[i];
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (item->yn_type != YN_MAP) {
			cfg_error(cx, item,
			    "%s: expected a mapping with url, and format, "
			    "secret_env or timeout",
			    where);
			continue;
		}
		wh = &cf->cf_webhooks[cf->cf_nwebhooks++];
		wh->wh_format = WEBHOOK_JSON;
		wh->wh_timeout_ms = 5000;
		cfg_apply(cx, webhook_keys, where, item, item, wh);
	}
}

static int
url_has(CURLU *u, CURLUPart part)
{
	char *v = NULL;
	int has;

	has = curl_url_get(u, part, &v, 0) == CURLUE_OK && v != NULL;
	curl_free(v);
	return (has);
}

/*
 * A webhook URL: http or https, a host, no user@. Never echoed: the path
 * or query of a webhook URL is often its only credential.
 */
static void
cfgp_webhook_url(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct webhook_conf *wh = dst;
	CURLU *u;
	CURLUcode rc;
	char *scheme = NULL, *host = NULL, *url = NULL;
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a URL")) == NULL)
		return;
	if (strlen(s) > ALERTS_URL_MAX) {
		cfg_error(
		    cx, n, "%s: longer than %d bytes", path, ALERTS_URL_MAX);
		return;
	}
	if ((u = curl_url()) == NULL)
		fatalx("%s: curl_url", __func__);
	rc = curl_url_set(u, CURLUPART_URL, s, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK) {
		cfg_error(
		    cx, n, "%s: bad URL: %s", path, curl_url_strerror(rc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
		cfg_error(
		    cx, n, "%s: only http and https URLs are allowed", path);
		goto out;
	}
	if (url_has(u, CURLUPART_USER) || url_has(u, CURLUPART_PASSWORD)) {
		cfg_error(cx, n, "%s: userinfo (user@) is not allowed", path);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    *host == '\0') {
		cfg_error(cx, n, "%s: missing host", path);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
		fatalx("%s: curl_url_get", __func__);
	if (wh->wh_url != NULL)
		freezero(wh->wh_url, strlen(wh->wh_url));
	free(wh->wh_host);
	wh->wh_url = xstrdup(url);
	wh->wh_host = xstrdup(host);
out:
	curl_free(url);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
}

/* format: json | slack */
static void
cfgp_webhook_format(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	enum webhook_format *f = dst;
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "json or slack")) == NULL)
		return;
	if (strcmp(s, "json") == 0)
		*f = WEBHOOK_JSON;
	else if (strcmp(s, "slack") == 0)
		*f = WEBHOOK_SLACK;
	else
		cfg_error(cx, n, "%s: expected json or slack", path);
}

/* secret_env: a variable that must be set, holding the HMAC secret. */
static void
cfgp_webhook_secret_env(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	struct webhook_conf *wh = dst;
	const char *s, *v;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an environment variable name")) ==
	    NULL)
		return;
	if ((v = getenv(s)) == NULL || v[0] == '\0') {
		(void)cfg_secret_env(cx, n, path, s);
		return;
	}
	if (wh->wh_secret != NULL)
		freezero(wh->wh_secret, strlen(wh->wh_secret));
	free(wh->wh_secret_env);
	wh->wh_secret = xstrdup(v);
	wh->wh_secret_env = xstrdup(s);
}

/* Whole-section checks: the backoff can grow from initial to max. */
void
config_check_alerts(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	const struct ynode *retry, *at;

	retry = cfg_value(cfg_value(root, "alerts"), "retry");
	if (cf->cf_alert_max_backoff_ms > ALERTS_BACKOFF_MAX_MS) {
		if ((at = cfg_value(retry, "max_backoff")) == NULL)
			at = root;
		cfg_error(cx, at, "alerts.retry.max_backoff: at most 24h");
		return;
	}
	if (cf->cf_alert_initial_backoff_ms <= cf->cf_alert_max_backoff_ms)
		return;
	if ((at = cfg_value(retry, "initial_backoff")) == NULL)
		at = retry != NULL ? retry : root;
	cfg_error(cx, at,
	    "alerts.retry.initial_backoff: %ld ms is more than max_backoff "
	    "(%ld ms)",
	    cf->cf_alert_initial_backoff_ms, cf->cf_alert_max_backoff_ms);
}

/* Release alerts:'s fields, wiping the secrets. */
void
config_free_alerts(struct config *cf)
{
	struct webhook_conf *wh;
	size_t i;

	for (i = 0; i < cf->cf_nwebhooks; i++) {
		wh = &cf->cf_webhooks[i];
		if (wh->wh_url != NULL)
			freezero(wh->wh_url, strlen(wh->wh_url));
		free(wh->wh_host);
		free(wh->wh_secret_env);
		if (wh->wh_secret != NULL)
			freezero(wh->wh_secret, strlen(wh->wh_secret));
	}
	free(cf->cf_webhooks);
	cf->cf_webhooks = NULL;
	cf->cf_nwebhooks = 0;
}
