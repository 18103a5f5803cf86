/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The process_* figures of /metrics, read from the kernel at each scrape
 * on the loop thread: CPU time (getrusage), resident and virtual memory
 * (/proc/self/statm), open descriptors (/proc/self/fd) and their limit,
 * and when the daemon started. Each read is a few system calls; a figure
 * that cannot be read is 0.
 */
#include <sys/resource.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/metrics.h"
#include "tollgate/util.h"

#include "admin_int.h"

static int64_t ad_started_ms;

/* Note when the daemon started (admin_start). */
void
admin_process_started(void)
{
	if (ad_started_ms == 0)
		ad_started_ms = wallclock_ms();
}

/* Fill p from the kernel. */
void
admin_process_stats(struct metrics_process *p)
{
	struct rusage ru;
	struct rlimit rl;
	struct dirent *de;
	unsigned long long vsz = 0, rss = 0;
	long page = sysconf(_SC_PAGESIZE);
	FILE *f;
	DIR *d;

	memset(p, 0, sizeof(*p));
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		p->mp_cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000 +
		    (uint64_t)ru.ru_utime.tv_usec +
		    (uint64_t)ru.ru_stime.tv_sec * 1000000 +
		    (uint64_t)ru.ru_stime.tv_usec;
	if ((f = fopen("/proc/self/statm", "re")) != NULL) {
		if (fscanf(f, "%llu %llu", &vsz, &rss) == 2 && page > 0) {
			p->mp_vsz_bytes = vsz * (uint64_t)page;
			p->mp_rss_bytes = rss * (uint64_t)page;
		}
		fclose(f);
	}
	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				p->mp_open_fds++;
		/* Not the descriptor this listing holds open. */
		if (p->mp_open_fds > 0)
			p->mp_open_fds--;
		closedir(d);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		p->mp_max_fds = (uint64_t)rl.rlim_cur;
	p->mp_start_ms = ad_started_ms;
}
