/* Logging: stderr with a "replfs: " prefix for tools and foreground daemons,
 * syslog for a detached daemon. Levels are filtered here, once. */
#include "utils.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static const char *log_ident = "replfs";
static int log_use_syslog;
static enum log_level log_max = LOG_LVL_INFO;
static int log_mirror = -1;

void log_mirror_fd(int fd)
{
	log_mirror = fd;
}

void log_init(const char *ident, int use_syslog, enum log_level max_level)
{
	log_ident = ident;
	log_use_syslog = use_syslog;
	log_max = max_level;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	va_list ap;

	if (lvl > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_use_syslog)
		syslog(prio[lvl], "%s", line);
	else
		fprintf(stderr, "%s: %s\n", log_ident, line);
	/* A daemon that has just detached still tells the terminal that started
	 * it why it failed. */
	if (log_mirror >= 0 && lvl <= LOG_LVL_WARN)
		dprintf(log_mirror, "%s: %s\n", log_ident, line);
}

void fault_point(const char *name)
{
	const char *want = getenv("REPLFS_FAULT");

	if (!want || strcmp(want, name) != 0)
		return;
	log_error("fault point %s: dying now (REPLFS_FAULT)", name);
	kill(getpid(), SIGKILL);
	pause();
}
