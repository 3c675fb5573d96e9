/* Logging: stderr with a "replfs: " prefix for tools and foreground daemons,
 * syslog for a detached daemon. Levels are filtered here, once. */
#include "utils.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

static const char *log_ident = "replfs";
static int log_use_syslog;
static enum log_level log_max = LOG_LVL_INFO;
static int log_mirror = -1;
static int log_to_journal;

/* systemd sets JOURNAL_STREAM to the device and inode of the stream it
 * connected to stderr: then each line gets a "<N>" priority prefix, which
 * journald strips and keeps as the level. */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_mirror_fd(int fd)
{
	log_mirror = fd;
}

void log_init(const char *ident, int use_syslog, enum log_level max_level)
{
	log_ident = ident;
	log_use_syslog = use_syslog;
	log_max = max_level;
	log_to_journal = !use_syslog && stderr_is_journal();
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
	else if (log_to_journal)
		fprintf(stderr, "<%d>%s: %s\n", prio[lvl], log_ident, line);
	else
		fprintf(stderr, "%s: %s\n", log_ident, line);
	/* A daemon that has just detached still tells the terminal that started
	 * it why it failed. */
	if (log_mirror >= 0 && lvl <= LOG_LVL_WARN)
		dprintf(log_mirror, "%s: %s\n", log_ident, line);
}

/* fault_point() moved to fault.c (REPLFS_FAULT syntax documented there). */
