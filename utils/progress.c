/* Progress of long work on a terminal: one line redrawn in place at most
 * five times a second, with amount, rate and time left. Nothing at all is
 * written when the stream is not a terminal (logs and pipes stay clean). */
#include "utils.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_REDRAW_NS 200000000ull

void progress_begin(struct progress *p, const char *what, uint64_t total, int unit_bytes,
		    int fd)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->what, sizeof(p->what), "%s", what);
	p->total = total;
	p->unit_bytes = unit_bytes;
	p->fd = fd >= 0 && isatty(fd) ? fd : -1;
	p->start_ns = time_mono_ns();
}

static void amount(int unit_bytes, uint64_t n, char *buf, size_t size)
{
	if (unit_bytes)
		fmt_bytes(n, buf, size);
	else
		snprintf(buf, size, "%llu", (unsigned long long)n);
}

void progress_format(const char *what, uint64_t done, uint64_t total, uint64_t elapsed_ns,
		     int unit_bytes, char *buf, size_t size)
{
	char d[32], t[32], r[32], eta[32] = "";
	double secs = (double)elapsed_ns / 1e9;
	double rate = secs > 0.05 ? (double)done / secs : 0;

	amount(unit_bytes, done, d, sizeof(d));
	amount(unit_bytes, total, t, sizeof(t));
	amount(unit_bytes, (uint64_t)rate, r, sizeof(r));
	if (rate > 0 && total > done) {
		unsigned long left = (unsigned long)((double)(total - done) / rate + 0.5);
		snprintf(eta, sizeof(eta), ", ETA %lu:%02lu", left / 60, left % 60);
	}
	if (total)
		snprintf(buf, size, "%s: %s / %s (%u%%), %s/s%s", what, d, t,
			 (unsigned)(done >= total ? 100 : done * 100 / total), r, eta);
	else
		snprintf(buf, size, "%s: %s, %s/s", what, d, r);
}

static void draw(struct progress *p, int final)
{
	char line[256];

	progress_format(p->what, p->done, p->total, time_mono_ns() - p->start_ns, p->unit_bytes,
			line, sizeof(line));
	/* \r and clear to the end of the line: the new line may be shorter. */
	dprintf(p->fd, "\r%s\033[K%s", line, final ? "\n" : "");
	p->drawn = 1;
}

void progress_update(struct progress *p, uint64_t done)
{
	uint64_t now;

	p->done = done;
	if (p->fd < 0)
		return;
	now = time_mono_ns();
	if (now - p->last_draw_ns < PROGRESS_REDRAW_NS)
		return;
	p->last_draw_ns = now;
	draw(p, 0);
}

void progress_end(struct progress *p)
{
	/* Work too short to have been drawn leaves no line behind. */
	if (p->fd >= 0 && p->drawn)
		draw(p, 1);
	p->fd = -1;
}
