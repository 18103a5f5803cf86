/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Provider-shaped error bodies and HTTP reason phrases. Messages are built
 * by tollgate from fixed text; they never echo a header, a key or a URL.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tollgate/log.h"
#include "tollgate/reply.h"
#include "tollgate/util.h"

/* The reason phrase of a status code. */
const char *
http_reason(int status)
{
	switch (status) {
	case 100:
		return ("Continue");
	case 200:
		return ("OK");
	case 400:
		return ("Bad Request");
	case 401:
		return ("Unauthorized");
	case 402:
		return ("Payment Required");
	case 403:
		return ("Forbidden");
	case 404:
		return ("Not Found");
	case 405:
		return ("Method Not Allowed");
	case 408:
		return ("Request Timeout");
	case 409:
		return ("Conflict");
	case 411:
		return ("Length Required");
	case 413:
		return ("Content Too Large");
	case 415:
		return ("Unsupported Media Type");
	case 417:
		return ("Expectation Failed");
	case 421:
		return ("Misdirected Request");
	case 422:
		return ("Unprocessable Content");
	case 429:
		return ("Too Many Requests");
	case 431:
		return ("Request Header Fields Too Large");
	case 500:
		return ("Internal Server Error");
	case 502:
		return ("Bad Gateway");
	case 503:
		return ("Service Unavailable");
	case 504:
		return ("Gateway Timeout");
	case 505:
		return ("HTTP Version Not Supported");
	}
	if (status >= 200 && status < 300)
		return ("OK");
	if (status >= 400 && status < 500)
		return ("Client Error");
	return ("Server Error");
}

static const char *
openai_type(int status)
{
	if (status == 401)
		return ("authentication_error");
	if (status == 403)
		return ("permission_error");
	if (status == 404)
		return ("invalid_request_error");
	if (status == 429)
		return ("rate_limit_error");
	if (status >= 500)
		return ("server_error");
	return ("invalid_request_error");
}

static const char *
anthropic_type(int status)
{
	switch (status) {
	case 401:
		return ("authentication_error");
	case 402:
		return ("billing_error");
	case 403:
		return ("permission_error");
	case 404:
		return ("not_found_error");
	case 413:
		return ("request_too_large");
	case 429:
		return ("rate_limit_error");
	case 504:
		return ("timeout_error");
	case 529:
		return ("overloaded_error");
	}
	if (status >= 500)
		return ("api_error");
	return ("invalid_request_error");
}

static const char *
gemini_status(int status)
{
	switch (status) {
	case 401:
		return ("UNAUTHENTICATED");
	case 403:
		return ("PERMISSION_DENIED");
	case 404:
		return ("NOT_FOUND");
	case 429:
		return ("RESOURCE_EXHAUSTED");
	case 502:
	case 503:
		return ("UNAVAILABLE");
	case 504:
		return ("DEADLINE_EXCEEDED");
	}
	if (status >= 500)
		return ("INTERNAL");
	return ("INVALID_ARGUMENT");
}

/*
 * Build an error object for status in the family's shape. code is a short
 * machine-readable reason (OpenAI "code"), type overrides the family's
 * error type for the status when not NULL (OpenAI and Anthropic), message
 * is a sentence; reqid may be NULL. The caller owns the tree.
 */
cJSON *
reply_error_json(enum api_family family, int status, const char *code,
    const char *type, const char *message, const char *reqid)
{
	cJSON *root, *err;
	char *msg;

	xasprintf(&msg, "tollgate: %s", message);
	root = cJSON_CreateObject();
	switch (family) {
	case FAMILY_ANTHROPIC:
		cJSON_AddStringToObject(root, "type", "error");
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(
		    err, "type", type != NULL ? type : anthropic_type(status));
		cJSON_AddStringToObject(err, "message", msg);
		if (reqid != NULL)
			cJSON_AddStringToObject(root, "request_id", reqid);
		break;
	case FAMILY_GEMINI:
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddNumberToObject(err, "code", status);
		cJSON_AddStringToObject(err, "message", msg);
		cJSON_AddStringToObject(err, "status", gemini_status(status));
		break;
	default:
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(err, "message", msg);
		cJSON_AddStringToObject(
		    err, "type", type != NULL ? type : openai_type(status));
		cJSON_AddNullToObject(err, "param");
		if (code != NULL)
			cJSON_AddStringToObject(err, "code", code);
		else
			cJSON_AddNullToObject(err, "code");
		break;
	}
	free(msg);
	return (root);
}

/*
 * Print and free a tree; the result is an allocated string. cJSON copies
 * a string's bytes as they are, so any byte that is not part of UTF-8 (a
 * stored kill reason, a client's key name echoed in an error) is printed
 * as U+FFFD here: every JSON document tollgate builds with cJSON, on
 * either port, is printed by this function. Outside strings JSON is
 * ASCII, so this cannot change the document's structure.
 */
char *
reply_json_take(cJSON *root)
{
	char *out, *ret;

	if ((out = cJSON_PrintUnformatted(root)) == NULL)
		fatalx("%s: cJSON_PrintUnformatted failed", __func__);
	cJSON_Delete(root);
	ret = utf8_dup(out);
	cJSON_free(out);
	return (ret);
}

/*
 * Build an error body for status in the family's shape (reply_error_json)
 * as text. Returns an allocated string.
 */
char *
reply_error_body(enum api_family family, int status, const char *code,
    const char *message, const char *reqid)
{
	return (reply_json_take(
	    reply_error_json(family, status, code, NULL, message, reqid)));
}
