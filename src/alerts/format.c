/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What an alert looks like on the wire, and the pure rules of delivery:
 * its id, the JSON body (also the rows of GET /v1/alerts), the Slack
 * text, the HMAC-SHA256 signature, the backoff schedule and which
 * outcomes are retried. Money stays integer nano-USD until it is printed,
 * as an exact decimal number with nine places like /v1/spend's cost_usd.
 * Nothing here keeps state; the tests drive these functions directly.
 */
#include <sys/random.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tollgate/alerts.h"
#include "tollgate/extensions.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/spend.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

/* Append a string literal, its length counted by the compiler. */
#define ADD(o, lit) spend_out_add((o), (lit), sizeof(lit) - 1)

static void
hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}

/* "prefix-" and 32 hex of SHA-256 over text, into buf; frees text. */
static void
digest_id(char *buf, size_t len, const char *prefix, char *text)
{
	unsigned char md[32];
	unsigned int n = 0;
	char h[33];

	if (EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL) != 1 ||
	    n != sizeof(md))
		fatalx("%s: EVP_Digest", __func__);
	free(text);
	hex(md, 16, h);
	snprintf(buf, len, "%s-%s", prefix, h);
}

/*
 * The alert's id into buf (ALERTS_ID_MAX bytes). A threshold's id is
 * "thr-" and 32 hex of SHA-256 over its scope key, window start and
 * threshold: the same firing always has the same id, so a receiver can
 * dedupe one that a crash made tollgate send twice. An unknown model's is
 * "unk-" and 32 hex over its message and day, for the same reason. Other
 * kinds get their
 * kind, the time and 64 random bits.
 */
void
alerts_make_id(const struct alert *a, char *buf, size_t len)
{
	unsigned char rnd[8];
	char *text, kind[9], h[17];
	size_t i, k = 0;

	/* Once a day per model: the same model and day, the same id. */
	if (a->al_kind != NULL && strcmp(a->al_kind, "unknown_model") == 0 &&
	    a->al_message != NULL) {
		xasprintf(&text, "unknown_model\n%s\n%" PRId64, a->al_message,
		    a->al_window_start);
		digest_id(buf, len, "unk", text);
		return;
	}
	if (a->al_scope_key != NULL && a->al_threshold_nusd >= 0 &&
	    a->al_kind != NULL && strcmp(a->al_kind, "threshold") == 0) {
		xasprintf(&text, "threshold\n%s\n%" PRId64 "\n%" PRId64,
		    a->al_scope_key, a->al_window_start, a->al_threshold_nusd);
		digest_id(buf, len, "thr", text);
		return;
	}
	for (i = 0; a->al_kind != NULL && a->al_kind[i] != '\0' &&
	     k < sizeof(kind) - 1;
	     i++)
		if (a->al_kind[i] >= 'a' && a->al_kind[i] <= 'z')
			kind[k++] = a->al_kind[i];
	kind[k] = '\0';
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		fatalx("%s: getrandom", __func__);
	hex(rnd, sizeof(rnd), h);
	snprintf(buf, len, "%s-%" PRIx64 "-%s", k > 0 ? kind : "alert",
	    (uint64_t)(a->al_at_ms > 0 ? a->al_at_ms : 0), h);
}

/* A JSON string, or null. */
static void
json_str(struct spend_out *o, const char *s)
{
	if (s == NULL)
		ADD(o, "null");
	else
		spend_out_json_str(o, s);
}

/* A time as RFC 3339 UTC, or null when there is none. */
static void
json_time(struct spend_out *o, int64_t ms)
{
	char t[SPEND_TIME_MAX];

	if (ms < 0 || ms == POLICY_NEVER ||
	    spend_format_time(ms, t, sizeof(t)) != 0)
		ADD(o, "null");
	else
		spend_out_json_str(o, t);
}

/*
 * Is a's spend a fact about it? A budget's alert has a window, threshold
 * or cap; a breaker's, a kill's or the ledger's has none of these, and a
 * "spent $0" there would read as if nothing had been spent. A breaker's
 * spend, when it tripped on money, is in its message.
 */
static int
has_spend(const struct alert *a)
{
	return (a->al_window != NULL || a->al_threshold_nusd >= 0 ||
	    a->al_cap_nusd >= 0);
}

/* Dollars as an exact number, or null below 0 (none). */
static void
json_usd(struct spend_out *o, int64_t nusd, int none_below_zero)
{
	if (none_below_zero && nusd < 0)
		ADD(o, "null");
	else
		spend_out_usd(o, nusd);
}

/*
 * The raise an alert's extend request asks for: a tenth of the cap in
 * force when it fired, rounded up to the nano-dollar so a cap of a few nano-dollars still
 * asks for something, and no more than one extension may add.
 */
static int64_t
extend_nusd(int64_t cap)
{
	int64_t n = cap / 10 + (cap % 10 != 0);

	if (n < 1)
		n = 1;
	return (n < EXTENSION_MAX_NUSD ? n : EXTENSION_MAX_NUSD);
}

/*
 * The "extend" member of a threshold alert of a capped budget: the POST
 * /v1/budgets/extend request that would raise that budget, with "by" left
 * empty for whoever approves it to fill in (an empty one is refused, so
 * replaying the alert never extends anonymously); null for every other
 * alert. Built from the alert's own facts (policy, scope key, cap in force,
 * cap, id), which its ledger row keeps too, so GET /v1/alerts shows the
 * request the webhook got, whatever the configuration has become since.
 */
static void
json_extend(struct spend_out *o, const struct alert *a, const char *id)
{
	cJSON *scope;
	char usd[40], *text, *reason;

	if (a->al_kind == NULL || strcmp(a->al_kind, "threshold") != 0 ||
	    a->al_policy == NULL || a->al_cap_nusd < 0 || id == NULL ||
	    (scope = policy_scope_key_json(a->al_scope_key)) == NULL) {
		ADD(o, "null");
		return;
	}
	if ((text = cJSON_PrintUnformatted(scope)) == NULL)
		fatalx("%s: cJSON_PrintUnformatted", __func__);
	cJSON_Delete(scope);
	usd_format(usd, sizeof(usd), extend_nusd(a->al_cap_nusd));
	ADD(o,
	    "{\"method\":\"POST\",\"path\":\"/v1/budgets/extend\","
	    "\"body\":{\"policy\":");
	spend_out_json_str(o, a->al_policy);
	ADD(o, ",\"scope\":");
	spend_out_add(o, text, strlen(text));
	ADD(o, ",\"usd\":");
	spend_out_json_str(o, usd);
	xasprintf(&reason, "raised after alert %s", id);
	ADD(o, ",\"reason\":");
	spend_out_json_str(o, reason);
	ADD(o, ",\"by\":\"\"}}");
	free(reason);
	cJSON_free(text);
}

/*
 * The JSON body of alert a with id: what a json webhook receives. With a
 * delivery status (GET /v1/alerts) a "delivery" object is added.
 */
void
alerts_body_json(const struct alert *a, const char *id, const char *delivery,
    int attempts, struct spend_out *o)
{
	int t, first = 1;

	ADD(o, "{\"id\":");
	json_str(o, id);
	ADD(o, ",\"kind\":");
	json_str(o, a->al_kind);
	ADD(o, ",\"policy\":");
	json_str(o, a->al_policy);
	ADD(o, ",\"scope\":{");
	for (t = 0; t < TAG_MAX; t++) {
		if (a->al_tags[t] == NULL)
			continue;
		if (!first)
			ADD(o, ",");
		first = 0;
		spend_out_json_str(o, tag_name((enum tag)t));
		ADD(o, ":");
		spend_out_json_str(o, a->al_tags[t]);
	}
	ADD(o, "},\"scope_key\":");
	json_str(o, a->al_scope_key);
	ADD(o, ",\"window\":");
	json_str(o, a->al_window);
	ADD(o, ",\"window_start\":");
	json_time(o, a->al_window != NULL ? a->al_window_start : -1);
	ADD(o, ",\"reset_at\":");
	json_time(o, a->al_window != NULL ? a->al_reset_at : -1);
	ADD(o, ",\"threshold_usd\":");
	json_usd(o, a->al_threshold_nusd, 1);
	ADD(o, ",\"spent_usd\":");
	json_usd(o, has_spend(a) ? a->al_spent_nusd : -1, 1);
	ADD(o, ",\"cap_usd\":");
	json_usd(o, a->al_cap_nusd, 1);
	ADD(o, ",\"percent_of_cap\":");
	if (a->al_cap_nusd > 0)
		spend_out_printf(o, "%.2f",
		    (double)a->al_spent_nusd * 100.0 / (double)a->al_cap_nusd);
	else
		ADD(o, "null");
	ADD(o, ",\"message\":");
	json_str(o, a->al_message);
	ADD(o, ",\"fired_at\":");
	json_time(o, a->al_at_ms);
	ADD(o, ",\"extend\":");
	json_extend(o, a, id);
	if (delivery != NULL) {
		ADD(o, ",\"delivery\":{\"status\":");
		spend_out_json_str(o, delivery);
		spend_out_printf(o, ",\"attempts\":%d}", attempts);
	}
	ADD(o, "}");
}

/*
 * Dollars for people: the exact value with trailing zeros cut down to
 * cents ("40.00", "0.123456789").
 */
static void
human_usd(int64_t nusd, char *buf, size_t len)
{
	struct spend_out o;
	size_t n, dot;

	spend_out_init(&o, 64);
	spend_out_usd(&o, nusd);
	snprintf(buf, len, "%s", o.so_buf != NULL ? o.so_buf : "?");
	spend_out_free(&o);
	if ((n = strlen(buf)) == 0 || strchr(buf, '.') == NULL)
		return;
	dot = (size_t)(strchr(buf, '.') - buf);
	while (n > dot + 3 && buf[n - 1] == '0')
		buf[--n] = '\0';
}

/*
 * Text for Slack's mrkdwn (&, < and > escaped) or for the log (as is);
 * control bytes are dropped either way.
 */
static void
text_add(struct spend_out *o, const char *s, int slack)
{
	for (; s != NULL && *s != '\0'; s++) {
		if (!slack && (unsigned char)*s >= 0x20 && *s != 0x7f)
			spend_out_add(o, s, 1);
		else if (!slack)
			continue;
		else if (*s == '&')
			ADD(o, "&amp;");
		else if (*s == '<')
			ADD(o, "&lt;");
		else if (*s == '>')
			ADD(o, "&gt;");
		else if ((unsigned char)*s >= 0x20 && *s != 0x7f)
			spend_out_add(o, s, 1);
	}
}

/*
 * The one-line text of a with id into o, as the log shows it, or with
 * slack set as a Slack message's text.
 */
void
alerts_text(
    const struct alert *a, const char *id, int slack, struct spend_out *o)
{
	char usd[64], t[SPEND_TIME_MAX];
	int tg, first = 1;

	ADD(o, "tollgate alert (");
	text_add(o, a->al_kind, slack);
	ADD(o, ")");
	if (a->al_policy != NULL) {
		ADD(o, ": policy ");
		text_add(o, a->al_policy, slack);
	}
	for (tg = 0; tg < TAG_MAX; tg++) {
		if (a->al_tags[tg] == NULL)
			continue;
		if (first)
			ADD(o, ", scope ");
		else
			ADD(o, " ");
		first = 0;
		text_add(o, tag_name((enum tag)tg), slack);
		ADD(o, "=");
		text_add(o, a->al_tags[tg], slack);
	}
	if (a->al_window != NULL) {
		ADD(o, ", window ");
		text_add(o, a->al_window, slack);
	}
	if (has_spend(a)) {
		human_usd(a->al_spent_nusd, usd, sizeof(usd));
		spend_out_printf(o, ": spent $%s", usd);
	}
	if (a->al_cap_nusd >= 0) {
		human_usd(a->al_cap_nusd, usd, sizeof(usd));
		spend_out_printf(o, " of a $%s cap", usd);
		if (a->al_cap_nusd > 0)
			spend_out_printf(o, " (%.1f%%)",
			    (double)a->al_spent_nusd * 100.0 /
				(double)a->al_cap_nusd);
	}
	if (a->al_threshold_nusd >= 0) {
		human_usd(a->al_threshold_nusd, usd, sizeof(usd));
		spend_out_printf(o, ", alert at $%s", usd);
	}
	if (a->al_window != NULL && a->al_reset_at >= 0 &&
	    a->al_reset_at != POLICY_NEVER &&
	    spend_format_time(a->al_reset_at, t, sizeof(t)) == 0)
		spend_out_printf(o, "; resets %s", t);
	if (a->al_message != NULL) {
		/* "(ledger): ..." but "policy P, scope ...; ..." */
		if (has_spend(a) || a->al_policy != NULL || !first)
			ADD(o, "; ");
		else
			ADD(o, ": ");
		text_add(o, a->al_message, slack);
	}
	ADD(o, " [");
	text_add(o, id, slack);
	ADD(o, "]");
}

/* The Slack-compatible body of a: {"text": "..."}. */
void
alerts_body_slack(const struct alert *a, const char *id, struct spend_out *o)
{
	struct spend_out text;

	spend_out_init(&text, ALERTS_BODY_MAX / 2);
	alerts_text(a, id, 1, &text);
	ADD(o, "{\"text\":");
	spend_out_json_str(o, text.so_buf != NULL ? text.so_buf : "");
	ADD(o, "}");
	spend_out_free(&text);
}

/*
 * HMAC-SHA256 of the body's exact bytes with secret, as 64 lowercase hex
 * digits and a NUL in out: X-Tollgate-Signature is "sha256=" and this.
 */
void
alerts_sign(const char *secret, const void *body, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, md,
		&n) == NULL ||
	    n != 32)
		fatalx("%s: HMAC", __func__);
	hex(md, 32, out);
	OPENSSL_cleanse(md, sizeof(md));
}

/*
 * The wait before the next attempt, after `failed` attempts have failed
 * (1 or more): initial doubled each time, capped at max, then "equal
 * jitter": a value in [d/2, d] picked by rnd, so retries from many
 * tollgates spread out but never wait longer than the cap.
 */
int64_t
alerts_backoff_ms(int failed, int64_t initial, int64_t max, uint32_t rnd)
{
	int64_t d = initial, half;
	int i;

	if (initial < 1)
		initial = d = 1;
	if (max < initial)
		max = initial;
	for (i = 1; i < failed && d < max; i++)
		d = d > max / 2 ? max : d * 2;
	if (d > max)
		d = max;
	half = d / 2;
	return (d - half + (int64_t)(((uint64_t)half * rnd) >> 32));
}

/*
 * What an attempt's outcome calls for: a transport error (curl's code,
 * not 0: refused connection, DNS, TLS, timeout) or 408, 429 or 5xx is
 * retried; 2xx is delivered; anything else (a 3xx, since redirects are
 * not followed, or a 4xx) fails at once.
 */
enum alerts_outcome
alerts_classify(int transport_error, long status)
{
	if (transport_error != 0)
		return (ALERTS_RETRY);
	if (status >= 200 && status <= 299)
		return (ALERTS_DELIVERED);
	if (status == 408 || status == 429 || (status >= 500 && status <= 599))
		return (ALERTS_RETRY);
	return (ALERTS_FAILED);
}
