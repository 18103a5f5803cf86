/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin API's client for the command line: the URL and token found
 * the way every subcommand finds its configuration, and requests made
 * with one reused libcurl easy handle (a command line tool has nothing
 * else to do meanwhile). Redirects are never followed: the token is for
 * that listener alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "tollgate/adminc.h"
#include "tollgate/buf.h"
#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

static size_t
body_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	/* A short count makes libcurl fail the transfer: the cap is hit. */
	if (buf_add(b, ptr, size * n) != 0)
		return (0);
	return (size * n);
}

/*
 * The admin URL (when need_url) and token from the configuration at
 * path; its errors on stderr. 0, or -1.
 */
static int
from_config(struct adminc *ac, const char *path, int need_url)
{
	struct config *cf;
	const char *host;

	if ((cf = config_load_cli(path)) == NULL)
		return (-1);
	if (need_url) {
		if (cf->cf_admin_port == 0) {
			fprintf(stderr,
			    "%s: admin.listen has port 0 (chosen at start): "
			    "give --admin URL\n",
			    path);
			config_unref(cf);
			return (-1);
		}
		host = cf->cf_admin_host;
		/* A wildcard address is reached on loopback. */
		if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
			host = "127.0.0.1";
		else if (strcmp(host, "::") == 0)
			host = "::1";
		xasprintf(&ac->ac_base,
		    strchr(host, ':') != NULL ? "http://[%s]:%d"
					      : "http://%s:%d",
		    host, cf->cf_admin_port);
	}
	if (ac->ac_auth == NULL && cf->cf_admin_token != NULL)
		xasprintf(&ac->ac_auth, "Authorization: Bearer %s",
		    cf->cf_admin_token);
	config_unref(cf);
	return (0);
}

/*
 * Set ac up from the flags: admin (--admin URL, or NULL), config (-c,
 * or NULL) and the default configuration's path. TOLLGATE_ADMIN_TOKEN,
 * when set, is the token; else the configuration's. 0, or -1 after
 * saying why on stderr (2 for a bad URL: a usage error).
 */
int
adminc_setup(struct adminc *ac, const char *admin, const char *config,
    const char *default_config)
{
	const char *tok;

	memset(ac, 0, sizeof(*ac));
	if ((tok = getenv("TOLLGATE_ADMIN_TOKEN")) != NULL && *tok != '\0')
		xasprintf(&ac->ac_auth, "Authorization: Bearer %s", tok);
	if (admin != NULL) {
		if (strncmp(admin, "http://", 7) != 0 &&
		    strncmp(admin, "https://", 8) != 0) {
			fprintf(stderr,
			    "--admin: expected http://HOST:PORT, got '%s'\n",
			    admin);
			return (2);
		}
		ac->ac_base = xstrdup(admin);
		while (strlen(ac->ac_base) > 8 &&
		    ac->ac_base[strlen(ac->ac_base) - 1] == '/')
			ac->ac_base[strlen(ac->ac_base) - 1] = '\0';
	}
	if (config != NULL || admin == NULL) {
		if (from_config(ac, config != NULL ? config : default_config,
			admin == NULL) != 0)
			return (-1);
	}
	return (0);
}

/*
 * One request to the admin API: method, path (with its query) and an
 * optional JSON body. 0 with the answer's status and body (to free) when
 * one came back, whatever its status; -1 with *cause when none did.
 */
int
adminc_request(struct adminc *ac, const char *method, const char *path,
    const char *body, char **out, long *status, char **cause)
{
	struct curl_slist *hs = NULL;
	struct buf b;
	char *url = NULL;
	CURLcode rc;
	CURL *c;

	*out = NULL;
	*status = 0;
	buf_init(&b, ADMINC_BODY_MAX, 0, BUF_NUL);
	if (ac->ac_curl == NULL && (ac->ac_curl = curl_easy_init()) == NULL)
		fatalx("%s: curl_easy_init", __func__);
	c = ac->ac_curl;
	curl_easy_reset(c);
	xasprintf(&url, "%s%s", ac->ac_base, path);
	if (ac->ac_auth != NULL)
		hs = curl_slist_append(hs, ac->ac_auth);
	if (body != NULL)
		hs = curl_slist_append(hs, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
	    ac->ac_timeout_ms > 0 ? ac->ac_timeout_ms : 5000L);
	/* Never follow a redirect: the token is for this listener alone. */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	rc = curl_easy_perform(c);
	curl_slist_free_all(hs);
	free(url);
	if (rc != CURLE_OK) {
		if (rc == CURLE_WRITE_ERROR)
			xasprintf(cause, "answer larger than %d bytes",
			    ADMINC_BODY_MAX);
		else
			xasprintf(cause, "%s", curl_easy_strerror(rc));
		buf_free(&b);
		return (-1);
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (buf_add(&b, "", 0) != 0 || (*out = buf_take(&b, NULL)) == NULL)
		*out = xstrdup("");
	buf_free(&b);
	return (0);
}

/* Free what adminc_setup and adminc_request made; the token is wiped. */
void
adminc_free(struct adminc *ac)
{
	free(ac->ac_base);
	if (ac->ac_auth != NULL) {
		explicit_bzero(ac->ac_auth, strlen(ac->ac_auth));
		free(ac->ac_auth);
	}
	if (ac->ac_curl != NULL)
		curl_easy_cleanup(ac->ac_curl);
	memset(ac, 0, sizeof(*ac));
}
