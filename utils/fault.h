/* fault: named fault points for crash and error-injection tests. The
 * REPLFS_FAULT environment variable (syntax at the top of fault.c) picks the
 * points that fire; without it every check is one predictable branch on a flag
 * read once at program start. */
#ifndef REPLFS_FAULT_H
#define REPLFS_FAULT_H

/* Set once, before main(), from REPLFS_FAULT; never written afterwards. */
extern int fault_enabled;

int fault_check_slow(const char *name);

/* Counts one arrival at the point called name. When a rule of REPLFS_FAULT
 * matches this arrival: action "crash" SIGKILLs the process here, an error
 * action returns its negative errno ("eio" -EIO, "enospc" -ENOSPC, "drop"
 * -ECONNABORTED: the caller loses the message it was handling), "stallS"
 * sleeps S seconds and goes on. Returns 0 otherwise. The caller sends an injected error down its real error path. */
static inline int fault_check(const char *name)
{
	if (__builtin_expect(!fault_enabled, 1))
		return 0;
	return fault_check_slow(name);
}

/* A crash-only point: dies here as a power cut or an OOM kill would leave the
 * process, when REPLFS_FAULT says so; error actions are ignored (logged). */
static inline void fault_point(const char *name)
{
	if (__builtin_expect(!fault_enabled, 1))
		return;
	(void)fault_check_slow(name);
}

/* Re-reads REPLFS_FAULT and resets every counter (unit tests). Not safe while
 * other threads pass fault points. */
void fault_reload(void);

#endif
