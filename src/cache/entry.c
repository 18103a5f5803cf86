/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One stored answer as a string of bytes, for a store that keeps values
 * and nothing else (the fleet's Redis): a magic, the numbers as 8 bytes
 * big-endian, the strings and the body each as 4 bytes of length then
 * their bytes. Decoding checks every length against what is left, so a
 * value that is not one of ours (or was cut) is a miss, never a read past
 * its end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/cache.h"
#include "tollgate/util.h"

#define ENTRY_MAGIC "TGCACHE1"
#define ENTRY_MAGIC_LEN 8
#define ENTRY_NUMS 9 /* status, created, six token counts, reserved */

static void
put_u64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = v & 0xff;
		v >>= 8;
	}
}

static uint64_t
get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return (v);
}

static unsigned char *
put_bytes(unsigned char *p, const char *s, size_t len)
{
	p[0] = (len >> 24) & 0xff;
	p[1] = (len >> 16) & 0xff;
	p[2] = (len >> 8) & 0xff;
	p[3] = len & 0xff;
	if (len > 0)
		memcpy(p + 4, s, len);
	return (p + 4 + len);
}

/* Take a length-prefixed string at *pp (of *left bytes). -1: cut short. */
static int
get_bytes(const unsigned char **pp, size_t *left, const char **s, size_t *len)
{
	const unsigned char *p = *pp;
	size_t n;

	if (*left < 4)
		return (-1);
	n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
	if (n > *left - 4)
		return (-1);
	*s = (const char *)p + 4;
	*len = n;
	*pp = p + 4 + n;
	*left -= 4 + n;
	return (0);
}

/*
 * Is e an answer the cache stores: a 2xx status and no negative token
 * count? Anything else read back from a store was not written by this
 * version, and is not served.
 */
int
cache_entry_valid(const struct cache_entry *e)
{
	const struct usage *u = &e->ce_usage;

	return (e->ce_status >= 200 && e->ce_status <= 299 &&
	    e->ce_created_ms >= 0 && u->u_input >= 0 && u->u_output >= 0 &&
	    u->u_cached >= 0 && u->u_cache_write >= 0 &&
	    u->u_cache_write_1h >= 0 && u->u_reasoning >= 0);
}

/* e as a new string of *len bytes. */
char *
cache_entry_encode(const struct cache_entry *e, size_t *len)
{
	const struct usage *u = &e->ce_usage;
	const char *ct = e->ce_ctype != NULL ? e->ce_ctype : "";
	int64_t nums[ENTRY_NUMS] = {e->ce_status, e->ce_created_ms, u->u_input,
	    u->u_output, u->u_cached, u->u_cache_write, u->u_cache_write_1h,
	    u->u_reasoning, 0};
	unsigned char *buf, *p;
	size_t n, i;

	n = ENTRY_MAGIC_LEN + 8 * ENTRY_NUMS + 4 * 4 + strlen(u->u_model) +
	    strlen(u->u_service_tier) + strlen(ct) + e->ce_len;
	p = buf = xmalloc(n);
	memcpy(p, ENTRY_MAGIC, ENTRY_MAGIC_LEN);
	p += ENTRY_MAGIC_LEN;
	for (i = 0; i < ENTRY_NUMS; i++, p += 8)
		put_u64(p, (uint64_t)nums[i]);
	p = put_bytes(p, u->u_model, strlen(u->u_model));
	p = put_bytes(p, u->u_service_tier, strlen(u->u_service_tier));
	p = put_bytes(p, ct, strlen(ct));
	p = put_bytes(p, e->ce_body, e->ce_len);
	*len = n;
	return ((char *)buf);
}

/*
 * Read an entry (into *e, which the caller clears) from len bytes at s.
 * Returns 0, or -1 when they are not an entry this version wrote.
 */
int
cache_entry_decode(const char *s, size_t len, struct cache_entry *e)
{
	const unsigned char *p = (const unsigned char *)s;
	const char *str[4];
	size_t slen[4], left = len, i;
	int64_t nums[ENTRY_NUMS];

	memset(e, 0, sizeof(*e));
	if (left < ENTRY_MAGIC_LEN + 8 * ENTRY_NUMS ||
	    memcmp(p, ENTRY_MAGIC, ENTRY_MAGIC_LEN) != 0)
		return (-1);
	p += ENTRY_MAGIC_LEN;
	left -= ENTRY_MAGIC_LEN;
	for (i = 0; i < ENTRY_NUMS; i++, p += 8, left -= 8)
		nums[i] = (int64_t)get_u64(p);
	for (i = 0; i < 4; i++)
		if (get_bytes(&p, &left, &str[i], &slen[i]) == -1)
			return (-1);
	if (left != 0 || slen[0] >= sizeof(e->ce_usage.u_model) ||
	    slen[1] >= sizeof(e->ce_usage.u_service_tier) || nums[0] < 200 ||
	    nums[0] > 299)
		return (-1);
	e->ce_status = (int)nums[0];
	e->ce_created_ms = nums[1];
	e->ce_usage.u_input = nums[2];
	e->ce_usage.u_output = nums[3];
	e->ce_usage.u_cached = nums[4];
	e->ce_usage.u_cache_write = nums[5];
	e->ce_usage.u_cache_write_1h = nums[6];
	e->ce_usage.u_reasoning = nums[7];
	e->ce_usage.u_source = USAGE_REPORTED;
	memcpy(e->ce_usage.u_model, str[0], slen[0]);
	memcpy(e->ce_usage.u_service_tier, str[1], slen[1]);
	e->ce_ctype = slen[2] > 0 ? xstrndup(str[2], slen[2]) : NULL;
	e->ce_body = xmalloc(slen[3] + 1);
	if (slen[3] > 0)
		memcpy(e->ce_body, str[3], slen[3]);
	e->ce_body[slen[3]] = '\0';
	e->ce_len = slen[3];
	if (!cache_entry_valid(e)) {
		cache_entry_clear(e);
		return (-1);
	}
	return (0);
}
