/* Fault injection: named points in the journal writer, the apply step, the
 * commit path, checkpoints, recovery and the replicator where a test can make
 * the process die or an operation fail, to prove that the error and crash
 * paths do what the design says.
 *
 * SYNTAX of the REPLFS_FAULT environment variable (read once, before main):
 *
 *     REPLFS_FAULT = rule [ "," rule ]...
 *     rule         = name [ ":" N [ "+" ] ] [ "=" action ]
 *
 *   name    a point name, e.g. "journal:fsync", "apply:record", "promote:epoch"
 *           (names contain ':' themselves; a last ":"-field made of digits is N)
 *   N       fire at the Nth arrival at that point in this process (1 = first);
 *           "N+" fires at the Nth and at every later arrival; no N: every arrival
 *   action  crash  (default) SIGKILL the process on the spot
 *           eio    the operation fails with EIO
 *           enospc the operation fails with ENOSPC
 *           drop   the message being sent or received is lost (ECONNABORTED)
 *           stallS the thread sleeps S seconds there, then goes on (a slow
 *                  disk or a long computation, without the cost of one)
 *
 *   journal:fsync:3=eio        the 3rd journal fdatasync fails with EIO
 *   apply:record:50            SIGKILL before the 50th record is applied
 *   journal:write:4+=enospc    the 4th and every later journal write: disk full
 *   repl:send:7=drop,repl:applied:2
 *   verify:hash=stall30        a slave takes 30 s more to hash its tree
 *
 * Counters are per process and per rule (atomic, so points reached from several
 * threads count each arrival once). A rule never matches a point of another
 * name. A fired rule logs a line naming the point, the arrival and the action.
 *
 * POINTS (the names each module passes; see the call sites):
 *   journal:write      before a record is written to its segment
 *   journal:fsync      before the group-commit fdatasync of the journal
 *   journal:segment    before a segment file is created (start or rotation)
 *   apply:record       before a record is applied to the cache
 *   apply:write        before a WRITE record's data reaches the data file
 *   apply:done         after a record was applied, before it is marked applied
 *   commit:done        after a record is marked applied (live or received)
 *   checkpoint:write   before the checkpoint (state) file is written
 *   recovery:replay    before each record replayed at mount
 *   repl:send          master: before a batch of records is sent to a slave
 *   repl:recv          slave: a batch arrived, before any of it is applied
 *   repl:applied       slave: a batch was applied and made durable, before
 *                      it is acknowledged
 *   snapshot:send      master: before a snapshot chunk is sent
 *   snapshot:recv      slave: a snapshot chunk arrived, before it is written
 *   verify:hash        slave: its tree is frozen for a verify, before hashing
 *   promote:*, rejoin:*  crash-only steps of failover and rejoin
 *
 * COST when REPLFS_FAULT is unset: fault_check() is an inline test of
 * fault_enabled, a flag written once before main() and never again.
 */
#include "fault.h"
#include "utils.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULT_RULES_MAX 16
#define FAULT_NAME_MAX 64

enum fault_action { FAULT_CRASH, FAULT_EIO, FAULT_ENOSPC, FAULT_DROP, FAULT_STALL };

struct fault_rule {
	char name[FAULT_NAME_MAX];
	unsigned long long nth;   /* 0: every arrival */
	int and_later;            /* "N+" */
	enum fault_action action;
	unsigned stall_s;         /* FAULT_STALL */
	_Atomic unsigned long long arrivals;
};

int fault_enabled;
static struct fault_rule rules[FAULT_RULES_MAX];
static int nrules;

static const char *const action_names[] = { "crash", "eio", "enospc", "drop", "stall" };
static const int action_errno[] = { 0, EIO, ENOSPC, ECONNABORTED, 0 };

/* Parses one rule of length len at s into r. Returns 0 or -EINVAL. */
static int rule_parse(const char *s, size_t len, struct fault_rule *r)
{
	const char *eq = memchr(s, '=', len);
	size_t nlen = eq ? (size_t)(eq - s) : len;

	memset(r, 0, sizeof(*r));
	r->action = FAULT_CRASH;
	if (eq) {
		size_t alen = len - nlen - 1;
		int found = 0;

		for (size_t i = 0; i < sizeof(action_names) / sizeof(*action_names); i++) {
			if (i != FAULT_STALL && strlen(action_names[i]) == alen &&
			    !memcmp(eq + 1, action_names[i], alen)) {
				r->action = (enum fault_action)i;
				found = 1;
			}
		}
		/* "stall" takes its seconds right after the word: stall30 */
		if (!found && alen > 5 && alen <= 9 && !memcmp(eq + 1, "stall", 5)) {
			unsigned secs = 0;
			size_t i;
			for (i = 6; i <= alen && eq[i] >= '0' && eq[i] <= '9'; i++)
				secs = secs * 10 + (unsigned)(eq[i] - '0');
			if (i == alen + 1 && secs > 0) {
				r->action = FAULT_STALL;
				r->stall_s = secs;
				found = 1;
			}
		}
		if (!found)
			return -EINVAL;
	}
	/* A last ":"-field of digits (optionally followed by '+') is N. */
	const char *colon = NULL;
	for (size_t i = nlen; i > 0; i--) {
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	}
	if (colon) {
		const char *p = colon + 1, *end = s + nlen;
		unsigned long long n = 0;
		int digits = 0;

		while (p < end && *p >= '0' && *p <= '9') {
			n = n * 10 + (unsigned long long)(*p++ - '0');
			digits++;
		}
		if (digits && p < end && *p == '+') {
			r->and_later = 1;
			p++;
		}
		if (digits && p == end) {
			if (n == 0)
				return -EINVAL;
			r->nth = n;
			nlen = (size_t)(colon - s);
		}
	}
	if (nlen == 0 || nlen >= FAULT_NAME_MAX)
		return -EINVAL;
	memcpy(r->name, s, nlen);
	r->name[nlen] = '\0';
	return 0;
}

static void fault_parse(const char *spec)
{
	nrules = 0;
	fault_enabled = 0;
	if (!spec || !*spec)
		return;
	while (*spec) {
		const char *comma = strchr(spec, ',');
		size_t len = comma ? (size_t)(comma - spec) : strlen(spec);

		if (len && nrules < FAULT_RULES_MAX) {
			if (rule_parse(spec, len, &rules[nrules]) == 0)
				nrules++;
			else
				/* log_* may not be set up yet: straight to stderr. */
				fprintf(stderr, "replfs: REPLFS_FAULT: ignoring bad rule \"%.*s\"\n",
					(int)len, spec);
		}
		spec += len;
		if (*spec == ',')
			spec++;
	}
	fault_enabled = nrules > 0;
}

__attribute__((constructor)) static void fault_init(void)
{
	fault_parse(getenv("REPLFS_FAULT"));
}

void fault_reload(void)
{
	fault_parse(getenv("REPLFS_FAULT"));
}

int fault_check_slow(const char *name)
{
	int rc = 0;

	for (int i = 0; i < nrules; i++) {
		struct fault_rule *r = &rules[i];

		if (strcmp(r->name, name) != 0)
			continue;
		unsigned long long n = atomic_fetch_add(&r->arrivals, 1) + 1;
		if (r->nth && n != r->nth && !(r->and_later && n > r->nth))
			continue;
		if (r->action == FAULT_CRASH) {
			log_error("fault point %s (arrival %llu): dying now (REPLFS_FAULT)", name, n);
			kill(getpid(), SIGKILL);
			pause();
		}
		if (r->action == FAULT_STALL) {
			log_warn("fault point %s (arrival %llu): stalling %u s (REPLFS_FAULT)", name,
				 n, r->stall_s);
			sleep(r->stall_s);
			continue;
		}
		log_warn("fault point %s (arrival %llu): injecting %s (REPLFS_FAULT)", name, n,
			 action_names[r->action]);
		if (!rc)
			rc = -action_errno[r->action];
	}
	return rc;
}
